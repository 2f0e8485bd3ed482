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
from typing import Any

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


def display_share(path: Path) -> dict[str, float]:
    """CPU seconds the engine's thread spends on the live display in one in-process run.

    Whole runs vary by several percent from one to the next on a shared machine, more than
    the display can cost, so this times the display's own work instead: building each
    snapshot (``Coordinator.progress``) and drawing it (the ``LiveDisplay`` listener, onto a
    terminal console writing to /dev/null), as the CLI does. The display costs the run at
    most this much of one core's time (CPU time of the thread, so being descheduled by the
    workers on a busy machine does not count), and only if the engine's thread limits it.
    """
    from rich.console import Console

    from stageflow import Pipeline
    from stageflow.engine.coordinator import Coordinator
    from stageflow.observe.progress import LiveDisplay

    spent = {"snapshots": 0.0, "drawing": 0.0, "calls": 0.0}
    snapshot = Coordinator.progress

    def timed_snapshot(self: Coordinator) -> Any:
        started = time.thread_time()
        try:
            return snapshot(self)
        finally:
            spent["snapshots"] += time.thread_time() - started

    with open(os.devnull, "w") as devnull:
        display = LiveDisplay(Console(file=devnull, force_terminal=True, width=120))

        def draw(progress: Any) -> None:
            started = time.thread_time()
            display(progress)
            spent["drawing"] += time.thread_time() - started
            spent["calls"] += 1

        Coordinator.progress = timed_snapshot  # type: ignore[method-assign]
        try:
            run = Pipeline.from_file(SEED_PIPELINE).run(path.read_bytes().splitlines())
            run.on_progress(draw)
            display.start()
            started = time.perf_counter()
            count = sum(1 for _ in run.lines())
            wall = time.perf_counter() - started
            display.stop()
        finally:
            Coordinator.progress = snapshot  # type: ignore[method-assign]
    return {**spent, "wall": wall, "results": count}


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
        shares = [display_share(seed_file(Path(tmp), records)) for _ in range(runs)]
    print("\n".join(section(rates, records, runs)))
    share = median([(s["snapshots"] + s["drawing"]) / s["wall"] for s in shares])
    print(
        f"The display's own work (snapshots and drawing, in the engine's thread; median of "
        f"{runs} in-process runs of {records:,} records): {share:.2%} of the run's wall "
        "time, in CPU seconds of the engine's thread; "
        f"{median([s['calls'] for s in shares]):.0f} redraws, "
        f"{median([s['drawing'] / s['calls'] * 1000 for s in shares]):.2f} ms per redraw, "
        f"{median([s['snapshots'] / s['calls'] * 1000 for s in shares]):.2f} ms per snapshot; "
        f"target under 2%: {'**met**' if share < 0.02 else '**not met**'}."
    )


if __name__ == "__main__":
    main()
