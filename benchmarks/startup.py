"""(e) Time from launching ``stageflow run`` to its first result line.

``stageflow run examples/seed/pipeline.yaml -i - -o -`` is launched with one record written
to its stdin at once (stdin stays open, so the end of the input does not hurry the output);
the clock stops when the first result line arrives on its stdout. Median of ``--runs``.

For scale, the same is measured for the cost of one Python process importing what a worker
imports (``stageflow.engine.worker``, the seed plugin, Twisted's reactor, the transport).

    python benchmarks/startup.py [--runs 7]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import (
    SEED_PIPELINE,
    launch,
    median,
    prepare_environment,
    reap,
    seed_records,
    stageflow_command,
)

_IMPORTS = (
    "import stageflow.engine.worker, stageflow.transport, stageflow_seed; "
    "from twisted.internet import epollreactor"
)


def first_result() -> float:
    """Seconds from launch to the first result line of one run."""
    record = next(seed_records(1))
    started = time.perf_counter()
    process = launch(
        stageflow_command("run", str(SEED_PIPELINE), "-i", "-", "-o", "-"),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )
    assert process.stdin is not None and process.stdout is not None
    try:
        process.stdin.write(record)
        process.stdin.flush()
        line = process.stdout.readline()
        elapsed = time.perf_counter() - started
        process.stdin.close()
        process.wait(30)
    finally:
        reap(process)
    if not line.strip():
        raise RuntimeError(f"startup: no result line (exit {process.returncode})")
    return elapsed


def import_floor() -> float:
    """Seconds for one interpreter to start and import what a worker needs."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", _IMPORTS], check=True)
    return time.perf_counter() - started


def measure(runs: int) -> dict[str, float]:
    times = []
    floors = []
    for index in range(runs):
        times.append(first_result())
        floors.append(import_floor())
        print(f"  startup run {index + 1}/{runs}: first result after {times[-1]:.3f}s "
              f"(one process's imports {floors[-1]:.3f}s)", flush=True)
    return {"median": median(times), "min": min(times), "max": max(times),
            "imports": median(floors), "runs": runs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    prepare_environment()
    print(measure(args.runs))


if __name__ == "__main__":
    main()
