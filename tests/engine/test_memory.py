"""Memory stays bounded when the sink is slower than the source: `stageflow run` into a slow pipe.

The coordinator takes a new input record only while fewer than ``--max-in-flight`` are in
flight, and it writes results in the same loop, so a full stdout pipe holds it still: it
neither reads input nor takes results until the reader drains the pipe. No queue grows.
The test watches this from outside with two measures:

* how far the CLI has read its input file (its file position, from /proc) against how many
  results the slow reader has received. That lag must stay under the in-flight window plus
  what the buffers between can hold; exact, and it does not depend on the allocator;
* the resident memory of every process of the tree, sampled every 50 ms, against the value
  each had once the run was warm.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from tests.helpers import REPO

RECORDS = 300_000
MAX_IN_FLIGHT = 8192
#: Records that may sit between the CLI's input position and the test's received count
#: besides the in-flight window: the completed results being written (at most one more
#: window), the 64 KiB pipe, the writer's and reader's 8 KiB buffers and the chunk the test
#: is counting; ~150 KiB of 27-byte results, rounded up to 8,192 records.
BUFFERED = 8192
MAX_LAG = 2 * MAX_IN_FLIGHT + BUFFERED
#: Growth allowed for any one process after warm-up. The in-flight window of ~250-byte
#: records costs the coordinator ~6 MB (8,192 roots with their bytes and tracking objects);
#: the rest is headroom for the allocator, which does not hand freed arenas back at once.
#: Reading the whole input instead would add ~200 MB (~700 bytes a record held).
MARGIN = 40 * 2**20
CHUNK = 64 * 1024
PAUSE = 0.1  # seconds between 64 KiB reads: ~0.65 MB/s, several times slower than the run


def write_input(path: Path) -> int:
    """RECORDS lines of one fixed length; return that length in bytes."""
    text = "x" * 200  # one 200-character word: the input is big, the output small
    width = len(json.dumps({"id": f"{0:07d}", "text": text})) + 1
    with path.open("w") as handle:
        for i in range(RECORDS):
            handle.write(json.dumps({"id": f"{i:07d}", "text": text}) + "\n")
    assert path.stat().st_size == width * RECORDS
    return width


@dataclass
class Watch:
    """Samples of the process tree under `stageflow run`, taken while the test reads."""

    pid: int
    source: str
    received: int = 0  # results the test has read so far; only grows
    peak: dict[int, int] = field(default_factory=dict)
    warm: dict[int, int] = field(default_factory=dict)
    names: dict[int, str] = field(default_factory=dict)
    peak_total: int = 0
    max_lag: int = 0
    samples: int = 0
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self, width: int) -> None:
        root = psutil.Process(self.pid)
        while not self.stop.wait(0.05):  # pacing, not synchronisation
            received = self.received
            try:
                tree = [root, *root.children(recursive=True)]
                position = next(
                    (f.position for f in root.open_files() if f.path == self.source), None
                )
            except psutil.NoSuchProcess:
                return
            if position is not None:
                self.max_lag = max(self.max_lag, position // width - received)
            total = 0
            for proc in tree:
                try:
                    rss = proc.memory_info().rss
                    self.names.setdefault(proc.pid, " ".join(proc.cmdline()[1:3]))
                except psutil.NoSuchProcess:
                    continue
                total += rss
                if received >= RECORDS // 10:  # warm: all stages busy, the window full
                    self.warm.setdefault(proc.pid, rss)
                    self.peak[proc.pid] = max(self.peak.get(proc.pid, 0), rss)
            self.peak_total = max(self.peak_total, total)
            self.samples += 1

    def table(self) -> str:
        return (
            "; ".join(
                f"{self.names.get(pid, pid)}: warm {self.warm[pid] / 2**20:.1f} MB, "
                f"peak {self.peak[pid] / 2**20:.1f} MB"
                for pid in self.peak
            )
            + f"; tree peak {self.peak_total / 2**20:.1f} MB"
        )


def test_slow_reader_keeps_every_process_bounded(tmp_path: Path) -> None:
    """300k records into a slowly read pipe: all results once, input read in step, flat memory."""
    source = tmp_path / "in.jsonl"
    width = write_input(source)
    pipeline = tmp_path / "pipe.yaml"
    pipeline.write_text(
        json.dumps(
            {
                "name": "slow-reader",
                "stages": [
                    {"name": "split", "uses": "tests.engine.stages:Split", "workers": 2},
                    {"name": "count", "uses": "tests.engine.stages:CountWords"},
                ],
            }
        )
    )
    errors = (tmp_path / "stderr.txt").open("wb")
    command = [sys.executable, "-m", "stageflow", "run", str(pipeline), "-i", str(source)]
    command += ["--max-in-flight", str(MAX_IN_FLIGHT)]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=errors, cwd=REPO)
    watch = Watch(proc.pid, str(source))
    sampler = threading.Thread(target=watch.run, args=(width,), daemon=True)
    sampler.start()
    chunks: list[bytes] = []
    started = time.monotonic()
    try:
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        while chunk := os.read(fd, CHUNK):
            chunks.append(chunk)
            watch.received += chunk.count(b"\n")
            time.sleep(PAUSE)  # the slow reader
        returncode = proc.wait(timeout=60)
    finally:
        watch.stop.set()
        sampler.join(10)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()
        errors.close()
    seconds = time.monotonic() - started
    stderr = (tmp_path / "stderr.txt").read_text()
    assert returncode == 0, stderr

    ids = [json.loads(line)["id"] for line in b"".join(chunks).splitlines()]
    assert len(ids) == RECORDS
    assert set(ids) == {f"{i:07d}" for i in range(RECORDS)}  # so every id exactly once
    assert f"{RECORDS} of {RECORDS} input records processed, {RECORDS} results written" in stderr

    print(f"\n{seconds:.1f}s, {watch.samples} samples, max lag {watch.max_lag}; {watch.table()}")
    assert watch.samples > 20 and len(watch.peak) == 4, watch.table()  # CLI and 3 workers
    assert 0 < watch.max_lag <= MAX_LAG, f"input read {watch.max_lag} records ahead of output"
    for pid, peak in watch.peak.items():
        assert peak <= watch.warm[pid] + MARGIN, f"{watch.names[pid]} grew: {watch.table()}"
