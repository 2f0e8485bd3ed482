"""(h) What watching a run costs: the live display, metrics and the report, against none.

The seed pipeline runs as ``stageflow -q run`` (no display, no progress line) and as
``stageflow run --progress`` (the rich live display, forced on, drawn to /dev/null so that
no terminal's speed counts), and with ``--metrics 127.0.0.1:0 --report FILE`` on top.
Runs are interleaved so drifting load hits all alike; the figure is each variant's
records/s from the first to the last output line over the quiet one's (target: the live
display costs under 2%, i.e. a ratio of at least 0.98).

    python benchmarks/progress_cost.py [--records 200000] [--runs 5] [--quick]
"""

from __future__ import annotations

import argparse
import os
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

VARIANTS = ("quiet", "live display", "live + metrics + report")


def command(variant: str, path: Path, directory: Path) -> list[str]:
    run = ["run", str(SEED_PIPELINE), "-i", str(path), "-o", "-"]
    if variant == "quiet":
        return stageflow_command("-q", *run)
    extra = ["--progress"]
    if variant == "live + metrics + report":
        extra += ["--metrics", "127.0.0.1:0", "--report", str(directory / "report.json")]
    return stageflow_command(*run, *extra)


def run_once(variant: str, path: Path, directory: Path, records: int) -> float:
    """One whole-process run; records/s from the first to the last output line."""
    started = time.perf_counter()
    with open(os.devnull, "wb") as devnull:
        process = launch(
            command(variant, path, directory), stdout=subprocess.PIPE, stderr=devnull
        )
        try:
            lines, first, last = timed_lines(process, started)
            process.wait(120)
        finally:
            reap(process)
    if lines != records or process.returncode != 0:
        raise RuntimeError(f"{variant}: {lines} of {records} lines, exit {process.returncode}")
    return (records - 1) / (last - first) if last > first else float("nan")


def measure(records: int, runs: int, directory: Path) -> dict[str, float]:
    """Median steady records/s per variant, interleaved runs."""
    path = seed_file(directory, records)
    found: dict[str, list[float]] = {variant: [] for variant in VARIANTS}
    for round_ in range(runs):
        for variant in VARIANTS:
            rate = run_once(variant, path, directory, records)
            found[variant].append(rate)
            print(f"  progress cost round {round_ + 1}/{runs} {variant:24s} {rate:>9,.0f} rec/s",
                  flush=True)
    return {variant: median(rates) for variant, rates in found.items()}


def section(rates: dict[str, float], records: int, runs: int) -> list[str]:
    quiet = rates["quiet"]
    title = (f"### (h) Cost of watching a run ({records:,} records, median of {runs} "
             "interleaved runs, first→last line)")
    out = [title, "", "| variant | rec/s | over quiet |", "|---|---:|---:|"]
    for variant, rate in rates.items():
        out.append(f"| {variant} | {rate:,.0f} | {rate / quiet:.3f}× |")
    live = rates["live display"] / quiet
    verdict = "**met**" if live >= 0.98 else "**not met**"
    summary = (f"The live display keeps {live:.1%} of the quiet throughput; target ≥ 98% "
               f"(under 2% cost): {verdict}.")
    out += ["", summary, ""]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="5,000 records, one run each")
    args = parser.parse_args()
    records, runs = (5_000, 1) if args.quick else (args.records, args.runs)
    prepare_environment()
    with tempfile.TemporaryDirectory(prefix="stageflow-bench-") as tmp:
        rates = measure(records, runs, Path(tmp))
    print("\n".join(section(rates, records, runs)))


if __name__ == "__main__":
    main()
