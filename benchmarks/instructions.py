"""Instructions per input record, counted by callgrind: stageflow's fused path against the
validating Pool's chain, each in one process, so that engine overhead can be read apart from
the machine's noise.

    python benchmarks/instructions.py [--pipelines text numeric] [--small 1000] [--large 3000]

On this project's shared 2-core machine a whole-process wall time moves by 10% or more between
two runs of the same program, more than most changes to the engine's per-record path. The
number of instructions a process executes does not: ``valgrind --tool=callgrind`` gives the
same count every time for the same input. Each program runs at two input sizes and the counts
are subtracted, so start-up cancels and what is left is the cost per input record:

    stageflow   the pipeline's fused unit, built as a worker builds it
                (:func:`stageflow.engine.group.build_runner`), fed 256-record frames in
                16-record slices and collecting garbage as a worker does, its results
                taken by the coordinator's tracker; no sockets
    pool        :func:`benchmarks.peer_models.chain` on each line, the results of 256 lines
                joined, as ``peer_pool.py``'s workers do; no pipes

So the difference is what the engine adds per record around the stages' own code inside a
worker (validation and the stages' work are the same in both), plus the tracker's part of the
coordinator. It leaves out the transport (frames, the digest, sockets) and the rest of the
coordinator. Needs valgrind (Debian's package ``valgrind``).
"""

from __future__ import annotations

import argparse
import gc
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import ROOT
from benchmarks.peer_work import input_file

HERE = Path(__file__).resolve().parent
PROGRAMS = ("stageflow", "pool")
#: Records per frame and per slice, as the coordinator and stageflow.engine.worker cut them.
_FRAME = 256
_SLICE = 64  # where a worker's Slices settle for records of tens of µs


def run_stageflow(pipeline: str, lines: list[bytes]) -> int:
    """The fused path over ``lines``; returns the number of results."""
    from stageflow.engine import shipping
    from stageflow.engine.coordinator import unit_settings
    from stageflow.engine.group import build_runner
    from stageflow.engine.runner import Pending
    from stageflow.engine.tracker import Tracker
    from stageflow.engine.worker import WORKER_GC_THRESHOLD
    from stageflow.pipeline import Pipeline

    (unit,) = Pipeline.from_file(HERE / f"peer_{pipeline}.yaml").plan(fuse=True).units
    runner = build_runner(
        unit_settings(unit),
        shipping.load_stage_class,
        trusted_input=False,
        current=None,
        max_record_size=1 << 20,
        final=True,
    )
    runner.setup()
    gc.freeze()  # as stageflow.engine.worker.run_worker does once its stage is set up
    gc.set_threshold(WORKER_GC_THRESHOLD, *gc.get_threshold()[1:])
    tracker = Tracker()
    results = 0
    for first in range(0, len(lines), _FRAME):
        frame = lines[first : first + _FRAME]
        ids: list[int] = []
        for seq, record in enumerate(frame, first + 1):
            ids += (seq, 0, tracker.add(seq, record).tag)
        pending = Pending()  # a worker's report: one per frame
        for start in range(0, len(frame), _SLICE):
            end = start + _SLICE
            runner.run_batch(ids[start * 3 : end * 3], frame[start:end], pending)
        runner.account(pending)
        tracker.ack(pending.acks)
        tracker.results(pending.ids, pending.records)
        results += len(pending.records)
    done = list(tracker.take_completed())
    if len(done) != len(lines) or tracker.roots:
        raise SystemExit(f"{len(done)} of {len(lines)} records completed")
    return results


def run_pool(pipeline: str, lines: list[bytes]) -> int:
    """The validating Pool's worker over ``lines``, a chunk at a time; returns the number of
    results."""
    from benchmarks import peer_pool

    peer_pool._start(pipeline, validate=True)
    results = 0
    for start in range(0, len(lines), peer_pool.CHUNK):
        results += peer_pool._work(lines[start : start + peer_pool.CHUNK]).count(b"\n")
    return results


def child(program: str, pipeline: str, source: Path, count: int) -> None:
    lines = source.read_bytes().split(b"\n")[:count]
    run = run_stageflow if program == "stageflow" else run_pool
    print(run(pipeline, lines))


def _environment() -> dict[str, str]:
    """The children's environment: a fixed hash seed (a random one lays sets and dicts out
    differently each run, which moves the count by about 1%), and byte-code written, so
    that only the warm-up compiles (see :func:`warm_up`)."""
    environment = {**os.environ, "PYTHONHASHSEED": "0"}
    environment.pop("PYTHONDONTWRITEBYTECODE", None)
    return environment


def warm_up(program: str, pipeline: str, source: Path, count: int) -> None:
    """Run ``program`` over ``count`` records once outside valgrind, so that every module
    it imports has its byte code written. Otherwise whichever measured run imports a module
    first also compiles it: tens of millions of instructions in one of the two runs only,
    which the subtraction does not cancel (with no byte code written yet, the text
    pipeline counted 69k per record instead of 276k)."""
    _run_child([], program, pipeline, source, count)


def _run_child(prefix: list[str], program: str, pipeline: str, source: Path, count: int) -> None:
    """Run the ``--child`` of ``program`` over ``count`` records, after ``prefix``."""
    command = [*prefix, sys.executable, __file__, "--child", program, "--pipeline", pipeline]
    command += ["--input", str(source), "--count", str(count)]
    subprocess.run(command, check=True, cwd=ROOT, capture_output=True, env=_environment())


def instructions(program: str, pipeline: str, source: Path, count: int, work: Path) -> int:
    """Instructions callgrind counts in one child process over ``count`` records."""
    out = work / f"{program}-{pipeline}-{count}.callgrind"
    prefix = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"]
    _run_child(prefix, program, pipeline, source, count)
    found = re.search(r"^summary: (\d+)", out.read_text(errors="replace"), re.MULTILINE)
    if found is None:
        raise SystemExit(f"callgrind wrote no summary to {out}")
    return int(found.group(1))


def measure(pipelines: list[str], small: int, large: int) -> dict[str, dict[str, float]]:
    """Instructions per input record, by pipeline and program."""
    per_record: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="stageflow-instructions-") as tmp:
        work = Path(tmp)
        for pipeline in pipelines:
            source = input_file(work, pipeline, large)
            per_record[pipeline] = {}
            for program in PROGRAMS:
                warm_up(program, pipeline, source, large)
                low = instructions(program, pipeline, source, small, work)
                high = instructions(program, pipeline, source, large, work)
                per_record[pipeline][program] = (high - low) / (large - small)
    return per_record


def table(per_record: dict[str, dict[str, float]]) -> str:
    rows = [
        "| pipeline | stageflow (instructions per record) | pool | stageflow ÷ pool |",
        "|---|---:|---:|---:|",
    ]
    for pipeline, counts in per_record.items():
        ours, theirs = counts["stageflow"], counts["pool"]
        rows.append(f"| {pipeline} | {ours:,.0f} | {theirs:,.0f} | {ours / theirs:.3f}× |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pipelines", nargs="+", default=["text", "numeric"])
    parser.add_argument("--small", type=int, default=1000)
    parser.add_argument("--large", type=int, default=3000)
    parser.add_argument("--child", choices=PROGRAMS, help=argparse.SUPPRESS)
    parser.add_argument("--pipeline", help=argparse.SUPPRESS)
    parser.add_argument("--input", help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.pipeline, Path(args.input), args.count)
        return
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (apt-get install valgrind)")
    if args.large <= args.small:
        raise SystemExit("--large must be more records than --small")
    print(table(measure(args.pipelines, args.small, args.large)))


if __name__ == "__main__":
    main()
