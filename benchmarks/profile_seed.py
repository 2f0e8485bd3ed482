"""Profile ``stageflow run`` on the seed pipeline with py-spy, per process, per record.

Runs ``py-spy record --subprocesses --format raw`` around
``stageflow run examples/seed/pipeline.yaml`` over a seed input file (or, with
``--pipeline text``, the text peer pipeline, benchmarks/peer_text.yaml), then reads the
collapsed stacks: each sample is put in the first matching bucket of :data:`WORKER_BUCKETS`
or :data:`COORDINATOR_BUCKETS` (a bucket matches when one of its functions is anywhere on
the stack, so buckets are disjoint and add up to the process's CPU samples). A worker is
named by the stages whose ``process()`` is found in its stacks (``preprocess+analyze`` for a
fused group). Time per record is the bucket's
samples divided by the sampling rate and by the records that process handled. py-spy
leaves idle samples out (a worker waiting in epoll costs nothing here); samples with no
Python frame at all, and startup, are shown but not counted per record.

Needs ``py-spy`` (``pip install py-spy``; not a project dependency) and permission to
ptrace the children.

    python benchmarks/profile_seed.py [--pipeline seed|text] [--records 200000] [--rate 100]
                                      [--keep DIR] [--no-fuse]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from collections import Counter, defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import SEED_PIPELINE, prepare_environment, seed_file, stageflow_command
from benchmarks.peer_work import input_file

TEXT_PIPELINE = Path(__file__).resolve().parent / "peer_text.yaml"

#: (bucket, function names), first match wins; names are py-spy's "Qual.name" of a frame.
WORKER_BUCKETS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("startup (imports, setup)", ("_find_and_load", "Worker.__init__", "Worker.start")),
    ("reports to the coordinator (JSON, sign, send)", ("Worker.send",)),
    ("decode frame (verify digest, JSON header, split)", ("decode_batch",)),
    ("validate Input (pydantic)", ("StageRunner.admit", "BaseModel.model_validate_json",
                                   "BaseModel.model_validate")),
    ("serialise and tag Outputs (pydantic to_json, tags, acks)", ("StageRunner.emit",)),
    ("stage process() incl. building the Output model",
     ("Preprocessor.process", "Analyzer.process", "Collector.process",
      "SplitDocument.process", "Tokenize.process", "Stats.process")),
    ("bookkeeping around process() (clock, current-record file, retries)",
     ("StageRunner.step", "StageRunner.process_item")),
    ("encode frame (JSON ids header, join, sign)", ("encode_batch",)),
    ("ZeroMQ send (transport push)", ("ZmqPushConnection.push",)),
    ("hand-off inside a fused group", ("_handoff.<locals>.handoff",)),
    ("runner bookkeeping (slices, counts, times)", ("run_chain", "flow", "StageRunner.account")),
    ("worker frame loop, flush (own code)", ("Worker.on_frame", "Worker.flush")),
    ("reactor, transport receive, flush scheduling", ("ReactorBase.mainLoop",)),
)
COORDINATOR_BUCKETS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("startup: imports, parse pipeline", ("_find_and_load", "Pipeline.from_file", "build_parser")),
    ("start workers", ("Coordinator.start",)),
    ("stop workers", ("Coordinator.close",)),
    ("read input lines (CLI)", ("_lines",)),
    ("track new roots (Root, attempt, random tag)", ("Tracker.add",)),
    ("encode frames (JSON ids header, join, sign)", ("encode_batch",)),
    ("send frames (queue, zmq)", ("Feeder.send_roots", "Dispatch.pump")),
    ("decode result frames (verify, JSON header)", ("decode_batch",)),
    ("track results (XOR, completion)", ("Tracker.results",)),
    ("decode control acks (verify, JSON)", ("decode_control",)),
    ("apply acks (XOR per record)", ("Tracker.ack",)),
    ("other control handling", ("Coordinator._on_done", "Coordinator.receive")),
    ("hand results out (tracker queue, emit)", ("Coordinator._emit", "Tracker.take_completed")),
    ("poll sockets", ("Coordinator._poll",)),
    ("supervise workers", ("Supervisor.supervise",)),
    ("coordinator loop itself", ("Coordinator._turns", "Coordinator.run", "Run.lines")),
    ("write output (CLI)", ("run",)),
)
_NOT_PER_RECORD = ("startup", "start workers", "stop workers", "no Python frame")
STAGES = {"Preprocessor.process": "preprocess", "Analyzer.process": "analyze",
          "Collector.process": "collect", "SplitDocument.process": "split",
          "Tokenize.process": "tokenize", "Stats.process": "stats"}


def record(records: int, rate: int, directory: Path, pipeline: str = "seed",
           extra: tuple[str, ...] = ()) -> Path:
    """Run py-spy around ``stageflow run``; return the raw collapsed-stack file."""
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if pipeline == "text":
        source, path = input_file(directory, "text", records), TEXT_PIPELINE
    else:
        source, path = seed_file(directory, records), SEED_PIPELINE
    raw = directory / "profile.txt"
    command = [pyspy, "record", "--subprocesses", "-r", str(rate),
               "-f", "raw", "-o", str(raw), "--",
               *stageflow_command("run", str(path), "-i", str(source),
                                  "-o", str(directory / "out.jsonl"), *extra)]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return raw


def _name(frame: str) -> str:
    return frame.split(" (", 1)[0]


def analyse(raw: Path) -> dict[str, dict[str, int]]:
    """Bucketed sample counts per process, named 'coordinator' or by stage (+ pid)."""
    per_pid: dict[str, Counter[str]] = defaultdict(Counter)
    stage_of: dict[str, set[str]] = defaultdict(set)
    depth: dict[str, int] = {}
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        frames = stack.split(";")
        process_frames = [i for i, f in enumerate(frames) if f.startswith("process ")]
        if not process_frames:
            continue
        pid = frames[process_frames[-1]].split(":", 1)[0].split()[1]
        depth[pid] = len(process_frames)
        names = {_name(f) for f in frames[process_frames[-1] + 1:]}
        stage_of[pid].update(stage for function, stage in STAGES.items() if function in names)
        worker = len(process_frames) > 1
        buckets = WORKER_BUCKETS if worker else COORDINATOR_BUCKETS
        bucket = "other" if names else "no Python frame (native threads, GC, exit)"
        for label, functions in buckets:
            if any(function in names for function in functions):
                bucket = label
                break
        per_pid[pid][bucket] += int(count_text)
    named: dict[str, dict[str, int]] = {}
    for pid, counts in per_pid.items():
        if depth[pid] == 1:
            named["coordinator"] = dict(counts)
        else:
            label = "+".join(s for s in STAGES.values() if s in stage_of[pid]) or "worker"
            named[f"{label} (pid {pid})"] = dict(counts)
    return named


def per_record(named: dict[str, dict[str, int]], records: int, rate: int) -> str:
    """Markdown: per process, each bucket's share and microseconds per record handled."""
    lines = []
    peers = Counter(process.split()[0] for process in named)
    for process, counts in sorted(named.items()):
        handled = records / peers[process.split()[0]]  # a unit's processes share its records
        fixed = {b: c for b, c in counts.items() if b.startswith(_NOT_PER_RECORD)}
        steady = {b: c for b, c in counts.items() if b not in fixed}
        total = sum(steady.values())
        lines.append(f"**{process}**: {total / rate:.2f} s of busy samples while records "
                     f"flow = {total / rate / handled * 1e6:.1f} µs per record "
                     f"({handled:,.0f} records); not per record: " + ", ".join(
                         f"{b} {c / rate:.2f} s" for b, c in sorted(fixed.items())))
        lines.append("")
        lines.append("| bucket | share | µs/record |")
        lines.append("|---|---:|---:|")
        for bucket, count in sorted(steady.items(), key=lambda kv: -kv[1]):
            lines.append(f"| {bucket} | {count / total:.0%} | "
                         f"{count / rate / handled * 1e6:.1f} |")
        lines.append("")
    return "\n".join(lines)


def profile(records: int, rate: int, keep: Path | None = None, pipeline: str = "seed",
            extra: tuple[str, ...] = ()) -> str:
    with tempfile.TemporaryDirectory(prefix="stageflow-profile-") as directory:
        raw = record(records, rate, Path(directory), pipeline, extra)
        if keep is not None:
            keep.mkdir(parents=True, exist_ok=True)
            shutil.copy(raw, keep / "profile-raw.txt")
        return per_record(analyse(raw), records, rate)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--rate", type=int, default=100)
    parser.add_argument("--keep", type=Path, help="copy the raw collapsed stacks here")
    parser.add_argument("--pipeline", choices=("seed", "text"), default="seed")
    parser.add_argument("--no-fuse", action="store_true", help="run with --no-fuse")
    args = parser.parse_args()
    prepare_environment()
    extra = ("--no-fuse",) if args.no_fuse else ()
    print(profile(args.records, args.rate, args.keep, args.pipeline, extra))


if __name__ == "__main__":
    main()
