"""(a) Seed pipeline throughput, end to end, as whole processes.

Three programs run the same pipeline (preprocess ×2 → analyze ×2 → collect ×1, one process
per worker, plus a source/sink process) over the same input file, writing JSON Lines to a
pipe that this process reads:

    stageflow   ``stageflow run examples/seed/pipeline.yaml -i FILE -o -`` (validates every hop)
    stageflow-nofuse   the same with ``--no-fuse``: every stage in processes of its own
    pyzmq       :mod:`benchmarks.seed_handwritten` (pyzmq + json, no validation)
    txzmq       :mod:`benchmarks.seed_txzmq` (txZMQ 1.0.0 + json, no validation)

Runs are interleaved (A B C A B C ...) so drifting machine load hits all alike. For each
run: records/s over the whole run (launch to exit, startup included) and records/s from the
first to the last output line (startup excluded); and the CPU time (user + system) of all
its processes per record, from ``getrusage(RUSAGE_CHILDREN)`` (each program waits for its
workers, so their time is included).

    python benchmarks/throughput.py [--records 200000] [--runs 3]
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import (
    SEED_PIPELINE,
    launch,
    median,
    prepare_environment,
    reap,
    seed_file,
    stageflow_command,
    timed_lines,
)

HERE = Path(__file__).resolve().parent
VARIANTS = ("stageflow", "stageflow-nofuse", "pyzmq", "txzmq")


def command(variant: str, path: Path) -> list[str]:
    if variant.startswith("stageflow"):
        extra = ["--no-fuse"] if variant == "stageflow-nofuse" else []
        return stageflow_command("run", str(SEED_PIPELINE), "-i", str(path), "-o", "-", *extra)
    script = {"pyzmq": "seed_handwritten.py", "txzmq": "seed_txzmq.py"}[variant]
    return [sys.executable, str(HERE / script), "-i", str(path), "-o", "-"]


def run_once(variant: str, path: Path, records: int) -> dict[str, float]:
    """One whole-process run: wall seconds, first/last output line, records/s both ways."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    process = launch(command(variant, path), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        lines, first, last = timed_lines(process, started)
        process.wait(60)
        wall = time.perf_counter() - started
    finally:
        reap(process)
    if lines != records or process.returncode != 0:
        raise RuntimeError(f"{variant}: {lines} of {records} lines, exit {process.returncode}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {
        "cpu_us": cpu / records * 1e6,
        "wall": wall,
        "first": first,
        "whole_rate": records / wall,
        "steady_rate": (records - 1) / (last - first) if last > first else float("nan"),
    }


def measure(records: int, runs: int, directory: Path) -> dict[str, dict[str, float]]:
    """Interleaved runs of every variant; medians per variant, with the raw runs."""
    path = seed_file(directory, records)
    found: dict[str, list[dict[str, float]]] = {v: [] for v in VARIANTS}
    for round_ in range(runs):
        for variant in VARIANTS:
            result = run_once(variant, path, records)
            found[variant].append(result)
            print(f"  throughput round {round_ + 1}/{runs} {variant:9s} "
                  f"{result['whole_rate']:>8,.0f} rec/s whole, "
                  f"{result['steady_rate']:>8,.0f} rec/s steady, {result['wall']:.2f}s",
                  flush=True)
    summary: dict[str, dict[str, float]] = {}
    for variant, results in found.items():
        summary[variant] = {
            key: median([r[key] for r in results])
            for key in ("wall", "first", "whole_rate", "steady_rate", "cpu_us")
        }
        summary[variant]["runs"] = len(results)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    prepare_environment()
    with tempfile.TemporaryDirectory(prefix="stageflow-bench-") as directory:
        summary = measure(args.records, args.runs, Path(directory))
    for variant, row in summary.items():
        print(f"{variant:9s} whole {row['whole_rate']:>8,.0f} rec/s   "
              f"steady {row['steady_rate']:>8,.0f} rec/s   wall {row['wall']:.2f}s")


if __name__ == "__main__":
    main()
