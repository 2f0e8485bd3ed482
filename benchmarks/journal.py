"""(f) The resume journal's cost: the seed pipeline into a regular file, with and without it.

Both variants run ``stageflow run examples/seed/pipeline.yaml -i FILE -o OUT`` into a fresh
regular file; ``no-journal`` adds ``--no-journal``. Runs are interleaved (A B A B ...) so
drifting load hits both alike. For each run: records/s over the whole run (launch to exit),
records/s over the engine's own time (the "in N.NNs" of the summary: worker start to end of
stream), and the CPU time of all its processes per record.

    python benchmarks/journal.py [--records 200000] [--runs 3]
"""

from __future__ import annotations

import argparse
import re
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
)

VARIANTS = ("journal", "no-journal")
_SECONDS = re.compile(rb" in (\d+\.\d+)s\s*$", re.M)


def run_once(variant: str, path: Path, records: int, directory: Path) -> dict[str, float]:
    out = directory / f"out-{variant}.jsonl"
    out.unlink(missing_ok=True)
    extra = ["--no-journal"] if variant == "no-journal" else []
    command = stageflow_command("run", str(SEED_PIPELINE), "-i", str(path), "-o", str(out), *extra)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    process = launch(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _, stderr = process.communicate(timeout=900)
        wall = time.perf_counter() - started
    finally:
        reap(process)
    lines = out.read_bytes().count(b"\n")
    if lines != records or process.returncode != 0:
        raise RuntimeError(f"{variant}: {lines} of {records} lines, exit {process.returncode}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    found = _SECONDS.findall(stderr)
    engine = float(found[-1]) if found else float("nan")
    return {
        "wall": wall,
        "whole_rate": records / wall,
        "engine_rate": records / engine,
        "cpu_us": cpu / records * 1e6,
    }


def measure(records: int, runs: int, directory: Path) -> dict[str, dict[str, float]]:
    """Interleaved runs of both variants; medians per variant."""
    path = seed_file(directory, records)
    found: dict[str, list[dict[str, float]]] = {v: [] for v in VARIANTS}
    for round_ in range(runs):
        for variant in VARIANTS:
            result = run_once(variant, path, records, directory)
            found[variant].append(result)
            print(
                f"  journal round {round_ + 1}/{runs} {variant:10s} "
                f"{result['whole_rate']:>8,.0f} rec/s whole, "
                f"{result['engine_rate']:>8,.0f} rec/s engine, {result['wall']:.2f}s",
                flush=True,
            )
    summary: dict[str, dict[str, float]] = {}
    for variant, results in found.items():
        summary[variant] = {
            key: median([r[key] for r in results])
            for key in ("wall", "whole_rate", "engine_rate", "cpu_us")
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
        print(
            f"{variant:10s} whole {row['whole_rate']:>8,.0f} rec/s   "
            f"engine {row['engine_rate']:>8,.0f} rec/s   CPU {row['cpu_us']:.1f} us/record"
        )


if __name__ == "__main__":
    main()
