"""(e) Time from launching ``stageflow run`` to its first result line, and (f) a short run
against a multiprocessing Pool doing the same work.

(e) ``stageflow run examples/seed/pipeline.yaml -i - -o -`` is launched with one record
written to its stdin at once (stdin stays open, so the end of the input does not hurry the
output); the clock stops when the first result line arrives on its stdout. Median of
``--runs``. For scale, the same is measured for one Python process importing what a worker
imports (``stageflow.engine.worker``, the seed plugin, Twisted's reactor, the transport),
and for one worker started by each launcher (:mod:`stageflow.engine.launcher`) up to the
moment its target runs: the first one, which pays for the fork server, and the next ones;
``forkserver_fork`` is the fork server forked from this process (``fork=True``, what
``stageflow run`` does), which already holds stageflow and pydantic.

(f) Whole processes, launch to exit, on the same ``--records`` (1,000) seed records:
``stageflow run`` against ``benchmarks/seed_pool.py`` (the same stage classes and the same
validation on every hop, in a ``multiprocessing.Pool``). Runs are interleaved; medians of the
wall times, of the per-run ratios, and of the CPU seconds of each program's whole process
tree.

    python benchmarks/startup.py [--runs 7] [--records 1000] [--quick]
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import (
    SEED_PIPELINE,
    launch,
    median,
    prepare_environment,
    reap,
    seed_file,
    seed_records,
    stageflow_command,
)
from stageflow.engine.launcher import ForkServerLauncher, Launcher, SubprocessLauncher

HERE = Path(__file__).resolve().parent
#: A launcher target that only says it runs (benchmarks.startup:touch).
_TOUCH = "benchmarks.startup:touch"

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


def touch(settings: dict[str, str]) -> int:
    """Launcher target: create ``settings["out"]`` (so the parent sees the target ran)."""
    Path(settings["out"]).touch()
    return 0


def spawn_to_done(launcher: Launcher, directory: Path, count: int, started: float) -> list[float]:
    """Seconds from spawn() until the target has run and exited, for ``count`` workers one
    after another; the first one counts from ``started``, before the launcher was made."""
    times = []
    for index in range(count):
        out = directory / f"touched-{index}"
        proc = launcher.spawn({"out": str(out)})
        proc.wait(60)
        if not out.exists():
            raise RuntimeError(f"startup: a launcher's worker did not run (exit {proc.returncode})")
        times.append(time.perf_counter() - started)
        started = time.perf_counter()
    return times


def launchers(directory: Path, workers: int = 5) -> dict[str, float]:
    """First and median next spawn-to-done time of each launcher (5 workers, the seed's)."""
    result = {}
    makers: tuple[tuple[str, Callable[[], Launcher]], ...] = (
        ("forkserver", lambda: ForkServerLauncher(target=_TOUCH)),
        ("forkserver_fork", lambda: ForkServerLauncher(target=_TOUCH, fork=True)),
        ("subprocess", lambda: SubprocessLauncher(target=_TOUCH)),
    )
    for name, make in makers:
        started = time.perf_counter()
        with make() as launcher:
            times = spawn_to_done(launcher, directory, workers, started)
        result[f"{name}_first"] = times[0]
        result[f"{name}_next"] = median(times[1:])
    return result


def children_cpu() -> float:
    """CPU seconds (user and system) of every process of ours that has been waited for."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def whole_run(command: list[str], output: Path) -> tuple[float, float]:
    """Seconds from launch to exit of one program writing its results to ``output``, and
    the CPU seconds it and every process under it used (each waited for by its parent)."""
    cpu = children_cpu()
    started = time.perf_counter()
    with output.open("wb") as handle:
        process = launch(command, stdout=handle, stderr=subprocess.DEVNULL)
        try:
            process.wait(300)
        finally:
            reap(process)
    elapsed = time.perf_counter() - started
    if process.returncode != 0:
        raise RuntimeError(f"startup: {command[:3]} exited {process.returncode}")
    return elapsed, children_cpu() - cpu


def against_pool(records: int, runs: int, directory: Path) -> dict[str, float]:
    """Interleaved whole runs of ``stageflow run`` and the Pool peer on ``records`` records:
    medians of wall and CPU seconds, and of the per-run ratio (the one to trust on a busy
    machine, with the CPU seconds: both move less with the load than the wall times)."""
    path = seed_file(directory, records)
    programs = {
        "stageflow": stageflow_command("run", str(SEED_PIPELINE), "-i", str(path), "-o", "-"),
        "pool": [sys.executable, str(HERE / "seed_pool.py"), str(path)],
    }
    times: dict[str, list[float]] = {name: [] for name in programs}
    cpus: dict[str, list[float]] = {name: [] for name in programs}
    for index in range(runs):
        for name, command in programs.items():
            output = directory / f"{name}.jsonl"
            elapsed, cpu = whole_run(command, output)
            times[name].append(elapsed)
            cpus[name].append(cpu)
            lines = output.read_bytes().count(b"\n")
            if lines != records:
                raise RuntimeError(f"startup: {name} wrote {lines} of {records} results")
        print(f"  {records:,} records, run {index + 1}/{runs}: stageflow "
              f"{times['stageflow'][-1]:.3f}s ({cpus['stageflow'][-1]:.2f} CPU s), Pool "
              f"{times['pool'][-1]:.3f}s ({cpus['pool'][-1]:.2f} CPU s)", flush=True)
    ratios = [ours / pool for ours, pool in zip(times["stageflow"], times["pool"], strict=True)]
    return {"stageflow": median(times["stageflow"]), "pool": median(times["pool"]),
            "ratio": median(ratios), "stageflow_cpu": median(cpus["stageflow"]),
            "pool_cpu": median(cpus["pool"]), "records": records}


def measure(runs: int, records: int = 1000) -> dict[str, float]:
    times = []
    floors = []
    for index in range(runs):
        times.append(first_result())
        floors.append(import_floor())
        print(f"  startup run {index + 1}/{runs}: first result after {times[-1]:.3f}s "
              f"(one process's imports {floors[-1]:.3f}s)", flush=True)
    with tempfile.TemporaryDirectory(prefix="stageflow-startup-") as tmp:
        spawned = [launchers(Path(tmp)) for _ in range(runs)]
        pool = against_pool(records, runs, Path(tmp))
    return {"median": median(times), "min": min(times), "max": max(times),
            "imports": median(floors), "runs": runs,
            **{key: median([s[key] for s in spawned]) for key in spawned[0]},
            "records": records, "run_stageflow": pool["stageflow"], "run_pool": pool["pool"],
            "run_ratio": pool["ratio"], "run_stageflow_cpu": pool["stageflow_cpu"],
            "run_pool_cpu": pool["pool_cpu"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--records", type=int, default=1000, help="for (f)")
    parser.add_argument("--quick", action="store_true", help="one run of 100 records: a check")
    args = parser.parse_args()
    prepare_environment()
    print(measure(1, 100) if args.quick else measure(args.runs, args.records))


if __name__ == "__main__":
    main()
