"""Peers: two pipelines of our own, each run by stageflow and by what a user could use instead.

Pipelines (:mod:`benchmarks.peer_work`), four worker processes each:

    text      split documents into sentences (keeping those of 4+ words), tokenize, statistics:
              about 2.2 small results per input record
    numeric   scale a series by its maximum, summarise it, label it: one result per record

Programs, each a whole process over the same input file, writing a JSON Lines file:

    stageflow         ``stageflow run benchmarks/peer_PIPELINE.yaml`` (fused: one group of 4)
    stageflow-nofuse  the same with ``--no-fuse`` (a process boundary between every stage)
    pool-validated    ``multiprocessing.Pool(4)``, pydantic models on every hop
    pool              the same on dicts and ``json``, no validation
    pyzmq             hand-written pyzmq + json, a process per stage worker, no validation
    txzmq             the same on txZMQ 1.0.0 reactors
    bytewax           Bytewax 0.21, 4 processes (the ``bytewax`` extra; skipped, with the reason,
                      when it is not installed)

Every output is checked exactly against the pipeline computed in this process (as sorted
canonical JSON lines). Rounds are interleaved (every program at every size, in a rotated
order each round) so drifting load hits all alike; the table gives medians. Two input sizes
separate the fixed cost (start-up, shutdown) from the cost per record:
``per record = (wall(large) - wall(small)) / (large - small)``.

    python benchmarks/peers.py [--quick] [--rounds 3] [--pipelines text numeric]
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import ROOT, launch, median, prepare_environment, reap, stageflow_command
from benchmarks.peer_work import canonical, expected, input_file

HERE = Path(__file__).resolve().parent
PROGRAMS = ("stageflow", "stageflow-nofuse", "pool-validated", "pool", "pyzmq", "txzmq",
            "bytewax")
SIZES = {"full": (50_000, 200_000), "quick": (500, 2_000)}


def skipped(program: str) -> str | None:
    """Why ``program`` cannot run here, or None."""
    if program == "bytewax" and importlib.util.find_spec("bytewax") is None:
        return "bytewax is not installed (pip install -e '.[bytewax]')"
    if program == "txzmq" and importlib.util.find_spec("txzmq") is None:
        return "txzmq is not installed (pip install -e '.[bench]')"
    return None


def command(program: str, pipeline: str, source: Path, output: Path) -> list[str]:
    files = ["-i", str(source), "-o", str(output)]
    if program.startswith("stageflow"):
        extra = ["--no-fuse"] if program == "stageflow-nofuse" else []
        return stageflow_command("run", str(HERE / f"peer_{pipeline}.yaml"), *files, *extra)
    if program.startswith("pool"):
        extra = ["--validate"] if program == "pool-validated" else []
        return [sys.executable, str(HERE / "peer_pool.py"), "--pipeline", pipeline, *extra, *files]
    script = {"pyzmq": "peer_zmq.py", "txzmq": "peer_txzmq.py", "bytewax": "peer_bytewax.py"}
    return [sys.executable, str(HERE / script[program]), "--pipeline", pipeline, *files]


def run_once(program: str, pipeline: str, source: Path, want: list[str], out: Path) -> float:
    """One whole-process run; its wall time, after checking every output line."""
    out.unlink(missing_ok=True)
    started = time.perf_counter()
    process = launch(command(program, pipeline, source, out), cwd=ROOT,
                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _, err = process.communicate(timeout=900)
        wall = time.perf_counter() - started
    finally:
        reap(process)
    if process.returncode != 0:
        raise RuntimeError(f"{program} on {pipeline} exited {process.returncode}: "
                           f"{err.decode(errors='replace')[-800:]}")
    got = canonical(out.read_bytes().splitlines())
    if got != want:
        raise RuntimeError(f"{program} on {pipeline}: wrong output ({len(got)} lines, "
                           f"{len(want)} expected)")
    return wall


def measure(pipelines: list[str], sizes: tuple[int, int], rounds: int, directory: Path,
            chosen: tuple[str, ...] = PROGRAMS) -> dict[str, dict[str, dict[int, float]]]:
    """Median wall seconds by pipeline, program and size (programs that cannot run left out);
    each round's own ratios to stageflow are kept in ``ROUND_RATIOS``."""
    programs = [p for p in chosen if skipped(p) is None]
    for program in chosen:
        if (reason := skipped(program)) is not None:
            print(f"  peers: skipping {program}: {reason}", flush=True)
    cases = [(pipeline, size, input_file(directory, pipeline, size), expected(pipeline, size))
             for pipeline in pipelines for size in sizes]
    walls: dict[tuple[str, str, int], list[float]] = {}
    for round_ in range(rounds):
        for pipeline, size, source, want in cases:
            shift = round_ % len(programs)
            for program in programs[shift:] + programs[:shift]:
                wall = run_once(program, pipeline, source, want, directory / "out.jsonl")
                walls.setdefault((pipeline, program, size), []).append(wall)
                print(f"  peers round {round_ + 1}/{rounds} {pipeline:7s} {size:>7,} "
                      f"{program:16s} {wall:7.2f}s", flush=True)
    found: dict[str, dict[str, dict[int, float]]] = {}
    for (pipeline, program, size), values in walls.items():
        found.setdefault(pipeline, {}).setdefault(program, {})[size] = median(values)
        ours = walls.get((pipeline, "stageflow", size))
        if ours is not None:
            pairs = zip(ours, values, strict=True)
            ROUND_RATIOS[pipeline, program, size] = [a / b for a, b in pairs]
    return found


#: (pipeline, program, size) -> stageflow's wall time ÷ the program's, round by round.
ROUND_RATIOS: dict[tuple[str, str, int], list[float]] = {}


#: (pipeline, program stageflow is compared with, largest allowed wall-time ratio).
TARGETS = (("text", "pool-validated", 1.0), ("text", "pyzmq", 0.5), ("numeric", "pyzmq", 0.5))


def section(found: dict[str, dict[str, dict[int, float]]], rounds: int) -> list[str]:
    """The Markdown table and the targets, for benchmarks/README.md."""
    out = [f"### (j) Peers: the same pipelines on other tools (median of {rounds} interleaved "
           "rounds, whole processes, outputs checked exactly)", ""]
    for program in PROGRAMS:
        if (reason := skipped(program)) is not None:
            out.append(f"Skipped {program}: {reason}.")
    for pipeline, programs in found.items():
        small, large = sorted(next(iter(programs.values())))
        base = programs["stageflow"]
        out += ["", f"**{pipeline}** ({small:,} and {large:,} input records)", "",
                f"| program | wall {small:,} (s) | wall {large:,} (s) | fixed (s) "
                f"| per record (µs) | stageflow ÷ this, {small:,} | stageflow ÷ this, {large:,} |",
                "|---|---:|---:|---:|---:|---:|---:|"]
        for program, wall in programs.items():
            per = (wall[large] - wall[small]) / (large - small)
            fixed = wall[small] - per * small
            out.append(f"| {program} | {wall[small]:.2f} | {wall[large]:.2f} | {fixed:.2f} | "
                       f"{per * 1e6:.1f} | {base[small] / wall[small]:.2f}× | "
                       f"{base[large] / wall[large]:.2f}× |")
    out += ["", "| target: stageflow's wall time ÷ the peer's | at both sizes | met? |",
            "|---|---:|---|"]
    for pipeline, peer, limit in TARGETS:
        programs = found.get(pipeline, {})
        if peer not in programs:
            continue
        ratios = [programs["stageflow"][s] / programs[peer][s] for s in sorted(programs[peer])]
        shown = ", ".join(f"{r:.2f}×" for r in ratios)
        each = [ROUND_RATIOS.get((pipeline, peer, s)) for s in sorted(programs[peer])]
        if all(each):
            shown += " (median of the rounds' own: " + ", ".join(
                f"{median(r):.2f}×" for r in each if r) + ")"
        verdict = "**met**" if max(ratios) <= limit else "**not met**"
        out.append(f"| {pipeline}: stageflow ÷ {peer} ≤ {limit} | {shown} | {verdict} |")
    return [*out, ""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny inputs, one round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pipelines", nargs="+", default=["text", "numeric"])
    parser.add_argument("--programs", nargs="+", choices=PROGRAMS, default=list(PROGRAMS),
                        help="only these (stageflow is always run: the ratios are to it)")
    args = parser.parse_args()
    chosen = tuple(p for p in PROGRAMS if p == "stageflow" or p in args.programs)
    prepare_environment()
    rounds = 1 if args.quick else args.rounds
    with tempfile.TemporaryDirectory(prefix="stageflow-peers-") as directory:
        found = measure(args.pipelines, SIZES["quick" if args.quick else "full"], rounds,
                        Path(directory), chosen)
    print("\n".join(section(found, rounds)))


if __name__ == "__main__":
    main()
