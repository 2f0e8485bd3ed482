"""(d) Peak RSS of every process of ``stageflow run`` with a slow sink, at two input sizes.

``stageflow run examples/seed/pipeline.yaml -i FILE -o -`` writes into a pipe that this
process reads slowly (``--sink-rate`` bytes/s, below what the pipeline produces), so the
pipe fills and backpressure must hold the records back. A psutil sampler records, every
``--every`` seconds, the RSS of the coordinator and of each worker (named in spawn order,
which is the pipeline's stage order). Memory is flat when each process's peak at the large
input is within 10% of its peak at the small one.

    python benchmarks/memory.py [--sizes 100000 1000000] [--sink-rate 1500000]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import (
    SEED_PIPELINE,
    launch,
    prepare_environment,
    reap,
    seed_file,
    stageflow_command,
)


def worker_names() -> list[str]:
    """The seed pipeline's workers, in the order the coordinator spawns them: by plan unit
    (``preprocess+analyze#0`` for a fused group)."""
    from stageflow import Pipeline

    units = Pipeline.from_file(SEED_PIPELINE).plan().units
    return [f"{unit.name}#{index}" for unit in units for index in range(unit.workers)]


class Sampler(threading.Thread):
    """Samples the RSS of a process and its children until stopped; keeps each peak."""

    def __init__(self, pid: int, every: float) -> None:
        super().__init__(daemon=True)
        self.root = psutil.Process(pid)
        self.every = every
        self.peaks: dict[int, int] = {}
        self.started_at: dict[int, float] = {}
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            try:
                processes = [self.root, *self.root.children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            for process in processes:
                try:
                    rss = process.memory_info().rss
                    self.started_at.setdefault(process.pid, process.create_time())
                except psutil.NoSuchProcess:
                    continue
                self.peaks[process.pid] = max(self.peaks.get(process.pid, 0), rss)
            self.halt.wait(self.every)

    def named_peaks(self) -> dict[str, int]:
        """Peaks by name: 'coordinator', then the workers in spawn order."""
        named = {"coordinator": self.peaks.get(self.root.pid, 0)}
        children = sorted(
            (pid for pid in self.peaks if pid != self.root.pid),
            key=lambda p: (self.started_at[p], p),
        )
        workers = worker_names()
        for index, pid in enumerate(children):
            name = workers[index] if index < len(workers) else f"extra#{index}"
            named[name] = self.peaks[pid]
        return named


def slow_read(process: subprocess.Popen[bytes], rate: float) -> int:
    """Read ``process``'s stdout at about ``rate`` bytes/s; return the lines read."""
    assert process.stdout is not None
    fd = process.stdout.fileno()
    chunk_size = 16384
    lines = 0
    started = time.perf_counter()
    read = 0
    while True:
        chunk = os.read(fd, chunk_size)
        if not chunk:
            return lines
        lines += chunk.count(b"\n")
        read += len(chunk)
        ahead = read / rate - (time.perf_counter() - started)
        if ahead > 0:
            time.sleep(ahead)


def measure_one(path: Path, records: int, rate: float, every: float) -> dict[str, float]:
    started = time.perf_counter()
    process = launch(
        stageflow_command("run", str(SEED_PIPELINE), "-i", str(path), "-o", "-"),
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )
    sampler = Sampler(process.pid, every)
    sampler.start()
    try:
        lines = slow_read(process, rate)
        process.wait(60)
    finally:
        sampler.halt.set()
        sampler.join()
        reap(process)
    if lines != records:
        raise RuntimeError(f"memory: {lines} of {records} lines, exit {process.returncode}")
    result: dict[str, float] = {f"{k}": v / 2**20 for k, v in sampler.named_peaks().items()}
    result["seconds"] = time.perf_counter() - started
    return result


def measure(
    sizes: list[int], rate: float, every: float, directory: Path
) -> dict[int, dict[str, float]]:
    """Peak RSS (MiB) per process for each input size."""
    found = {}
    for size in sizes:
        path = seed_file(directory, size)
        found[size] = measure_one(path, size, rate, every)
        print(f"  memory {size:>9,} records: " + ", ".join(
            f"{k} {v:.1f}" for k, v in found[size].items()), flush=True)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--sink-rate", type=float, default=1_500_000.0)
    parser.add_argument("--every", type=float, default=0.1)
    args = parser.parse_args()
    prepare_environment()
    with tempfile.TemporaryDirectory(prefix="stageflow-bench-") as directory:
        measure(args.sizes, args.sink_rate, args.every, Path(directory))


if __name__ == "__main__":
    main()
