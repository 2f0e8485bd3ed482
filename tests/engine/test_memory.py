"""Memory stays bounded when the sink is slower than the source: `stageflow run` into a slow pipe.

The coordinator takes a new input record only while fewer than ``--max-in-flight`` are in
flight, and it writes results in the same loop, so a full stdout pipe holds it still: it
neither reads input nor takes results until the reader drains the pipe. No queue grows.
The tests watch this from outside, sampling every 50 ms:

* how far the CLI has read its input file (its file position, from /proc) against how many
  results the reader has received. That lag must stay under the in-flight window plus what
  the buffers between can hold. It is exact, and catches any unbounded queue or read-ahead,
  however small the records;
* the peak resident memory of every process of the tree, against the same pipeline's peak
  over an input 18 times smaller: memory must not grow with the input.

While the stages keep up, the blocked write alone holds the coordinator back; the window is
what bounds the read-ahead when a stage falls behind the source, which the second test
checks with a deliberately slow stage.
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
CONTROL = 16_384  # two in-flight windows: the control run reaches the steady state too
MAX_IN_FLIGHT = 8192
#: How far the CLI's input position may run ahead of the results the reader has counted:
#: the window (records taken and not yet written, whether still in the stages or completed
#: and waiting for the pipe) plus what the buffers hold: the 64 KiB pipe, the chunk being
#: counted (64 KiB), the writer's 8 KiB and the reader's 8 KiB, about 5,200 records in all,
#: rounded up to 8,192.
MAX_LAG = MAX_IN_FLIGHT + 8192
#: Growth over the control run allowed to any one process. Both runs reach the steady state
#: (a full window costs the coordinator ~6 MB: 8,192 roots of ~250 bytes with their objects);
#: the margin is headroom for the allocator, which keeps freed arenas for a while. Holding
#: the 300k-record input in the coordinator would add ~80 MB.
MARGIN = 24 * 2**20
CHUNK = 64 * 1024
PAUSE = 0.1  # seconds between 64 KiB reads: ~0.65 MB/s, well below what the run can write
TEXT = "x" * 200  # one 200-character word: the input is big, the output (27 bytes) small


@dataclass
class Watch:
    """Samples of the process tree under `stageflow run`, taken while the test reads."""

    pid: int
    source: str
    width: int
    received: int = 0  # results the test has read so far; only grows
    peak: dict[int, int] = field(default_factory=dict)
    peak_total: int = 0
    max_lag: int = 0
    samples: int = 0
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        root = psutil.Process(self.pid)
        while not self.stop.wait(0.05):  # pacing, not synchronisation
            try:
                files = root.open_files()
                # Right after the position: the tree's scan below can take a while on a busy
                # machine, and the CLI reads on meanwhile, which would count as lag.
                received = self.received
                tree = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            for f in files:
                if f.path == self.source:
                    self.max_lag = max(self.max_lag, f.position // self.width - received)
            total = 0
            for proc in tree:
                try:
                    rss = proc.memory_info().rss
                except psutil.NoSuchProcess:
                    continue
                total += rss
                self.peak[proc.pid] = max(self.peak.get(proc.pid, 0), rss)
            self.peak_total = max(self.peak_total, total)
            self.samples += 1

    @property
    def coordinator(self) -> int:
        return self.peak[self.pid]

    @property
    def workers(self) -> list[int]:
        return [rss for pid, rss in self.peak.items() if pid != self.pid]

    def __str__(self) -> str:
        mb = 2**20
        workers = ", ".join(f"{rss / mb:.1f}" for rss in self.workers)
        return (
            f"peak RSS: coordinator {self.coordinator / mb:.1f} MB, workers {workers} MB, "
            f"tree {self.peak_total / mb:.1f} MB; max lag {self.max_lag} records"
        )


def watched_run(
    tmp_path: Path,
    records: int,
    *,
    text: str = TEXT,
    split: dict[str, object] | None = None,
    max_in_flight: int = MAX_IN_FLIGHT,
    pause: float = PAUSE,
) -> tuple[Watch, list[str]]:
    """Run split(2) -> count(1) over ``records`` lines, reading its stdout pipe slowly."""
    source = tmp_path / f"in-{records}.jsonl"
    width = len(json.dumps({"id": f"{0:07d}", "text": text})) + 1  # every line is as long
    with source.open("w") as handle:
        for i in range(records):
            handle.write(json.dumps({"id": f"{i:07d}", "text": text}) + "\n")
    assert source.stat().st_size == width * records
    pipeline = tmp_path / "pipe.yaml"
    stages = [
        {"name": "split", "uses": "tests.engine.stages:Split", "workers": 2, "config": split or {}},
        {"name": "count", "uses": "tests.engine.stages:CountWords"},
    ]
    pipeline.write_text(json.dumps({"name": "watched", "stages": stages}))
    stderr_path = tmp_path / f"stderr-{records}.txt"
    command = [sys.executable, "-m", "stageflow", "run", str(pipeline), "-i", str(source)]
    command += ["--max-in-flight", str(max_in_flight)]
    with stderr_path.open("wb") as errors:
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=errors, cwd=REPO)
    watch = Watch(proc.pid, str(source), width)
    sampler = threading.Thread(target=watch.run, daemon=True)
    sampler.start()
    chunks: list[bytes] = []
    try:
        assert proc.stdout is not None
        while chunk := os.read(proc.stdout.fileno(), CHUNK):
            chunks.append(chunk)
            watch.received += chunk.count(b"\n")
            time.sleep(pause)  # the slow reader
        returncode = proc.wait(timeout=60)
    finally:
        watch.stop.set()
        sampler.join(10)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()
    stderr = stderr_path.read_text()
    assert returncode == 0, stderr
    assert f"{records} of {records} input records processed, {records} results written" in stderr
    assert len(watch.peak) == 5, watch  # the CLI, its fork server and its three workers
    ids = [json.loads(line)["id"] for line in b"".join(chunks).splitlines()]
    assert len(ids) == records
    assert set(ids) == {f"{i:07d}" for i in range(records)}  # so every id exactly once
    return watch, ids


def test_slow_reader_keeps_every_process_bounded(tmp_path: Path) -> None:
    """300k records into a slowly read pipe: every result once, input read in step, no growth."""
    control, _ = watched_run(tmp_path, CONTROL)
    started = time.monotonic()
    watch, _ = watched_run(tmp_path, RECORDS)
    seconds = time.monotonic() - started
    print(f"\n{CONTROL} records: {control}\n{RECORDS} records in {seconds:.1f}s: {watch}")

    assert watch.samples > 50
    assert 0 < watch.max_lag <= MAX_LAG, f"the input was read too far ahead of the output: {watch}"
    assert watch.coordinator <= control.coordinator + MARGIN, f"{watch}; control {control}"
    assert max(watch.workers) <= max(control.workers) + MARGIN, f"{watch}; control {control}"


def test_slow_stage_reads_input_only_as_the_window_allows(tmp_path: Path) -> None:
    """A stage slower than the source: the CLI reads at most --max-in-flight ahead of output."""
    window = 2048
    watch, _ = watched_run(
        tmp_path, 30_000, text="a b", split={"pause": 0.0002}, max_in_flight=window, pause=0
    )
    print(f"\nslow stage, window {window}: {watch}")
    # Besides the window: results in the writer's buffer, the pipe and the chunk being
    # counted (at most ~5,200 27-byte results), and the reader's 8 KiB (~240 input lines).
    assert 0 < watch.max_lag <= window + 8192, f"the input was read too far ahead: {watch}"
