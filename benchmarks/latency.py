"""(c) Latency per record through three pass-through stages at a fixed rate (1k records/s).

The pipeline is benchmarks/pass3.yaml (three ``benchmarks.stages:Pass`` stages, one worker
each). Every record carries its send time; the results are read in the same process and
compared with ``time.perf_counter()`` (one clock, no cross-process skew). The first
``--warmup`` records are left out.

Two ways in:

embedding
    ``Pipeline.from_file(...).run(items, read_ahead=True).lines()``, the items a paced
    generator that sleeps until the next record is due (``read_ahead`` is the documented way
    to feed a blocking iterator). Two figures: from the moment stageflow took the
    record (``sent``, stamped in the record), and from the moment it was due by the schedule
    (which adds any delay before the coordinator asked the generator for it). A third,
    unpaced figure sends one record at a time, the next once the previous came back: the
    round trip with nothing else in flight, the floor under the paced figures.
cli
    ``python -m stageflow run benchmarks/pass3.yaml`` with a thread writing one stamped line
    per millisecond into its stdin and this process reading its stdout. The writer starts
    pacing once a first record has come back, so startup is not counted.

    python benchmarks/latency.py [--rate 1000] [--seconds 10]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import ROOT, launch, percentile, prepare_environment, reap

PIPELINE = Path(__file__).resolve().parent / "pass3.yaml"


def _summary(latencies: list[float], elapsed: float, count: int) -> dict[str, float]:
    latencies.sort()
    return {
        "records": len(latencies),
        "rate": count / elapsed if elapsed else float("nan"),
        "p50_ms": percentile(latencies, 0.50) * 1e3,
        "p99_ms": percentile(latencies, 0.99) * 1e3,
        "max_ms": latencies[-1] * 1e3 if latencies else float("nan"),
    }


def embedding(rate: float, seconds: float, warmup: int) -> dict[str, dict[str, float]]:
    """Latency through the embedding API; returns 'sent' and 'scheduled' summaries."""
    from stageflow import Pipeline

    count = int(rate * seconds) + warmup
    period = 1.0 / rate
    due: dict[int, float] = {}

    def paced() -> Iterator[Any]:
        clock = time.perf_counter
        start = clock()
        for seq in range(count):
            when = start + seq * period
            delay = when - clock()
            if delay > 0:
                time.sleep(delay)
            due[seq] = when
            yield {"seq": seq, "sent": clock()}

    from_sent: list[float] = []
    from_due: list[float] = []
    first_at = last_at = 0.0
    run = Pipeline.from_file(PIPELINE).run(paced(), read_ahead=True)
    for line in run.lines():
        now = time.perf_counter()
        record = json.loads(line)
        if record["seq"] < warmup:
            first_at = now
            continue
        last_at = now
        from_sent.append(now - record["sent"])
        from_due.append(now - due[record["seq"]])
    measured = count - warmup
    return {
        "sent": _summary(from_sent, last_at - first_at, measured),
        "scheduled": _summary(from_due, last_at - first_at, measured),
    }


def closed_loop(count: int, warmup: int) -> dict[str, float]:
    """One record in flight at a time through the embedding API: the unloaded round trip."""
    from stageflow import Pipeline
    from stageflow.engine.coordinator import WAIT

    back = [0]

    def one_at_a_time() -> Iterator[Any]:
        for seq in range(count + warmup):
            while back[0] < seq:
                yield WAIT
            yield {"seq": seq, "sent": time.perf_counter()}

    latencies: list[float] = []
    first_at = last_at = 0.0
    for line in Pipeline.from_file(PIPELINE).run(one_at_a_time()).lines():
        now = time.perf_counter()
        record = json.loads(line)
        back[0] += 1
        if record["seq"] < warmup:
            first_at = now
            continue
        last_at = now
        latencies.append(now - record["sent"])
    return _summary(latencies, last_at - first_at, count)


def cli(rate: float, seconds: float, warmup: int) -> dict[str, float]:
    """Latency through ``stageflow run`` with a paced stdin writer."""
    count = int(rate * seconds) + warmup
    period = 1.0 / rate
    process = launch(
        [sys.executable, "-m", "stageflow", "run", str(PIPELINE)],
        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )
    assert process.stdin is not None and process.stdout is not None
    stdin = process.stdin
    ready = threading.Event()

    def write() -> None:
        clock = time.perf_counter
        stdin.write(b'{"seq":-1,"sent":0}\n')
        stdin.flush()
        ready.wait(120)
        start = clock()
        try:
            for seq in range(count):
                delay = start + seq * period - clock()
                if delay > 0:
                    time.sleep(delay)
                stdin.write(b'{"seq":%d,"sent":%r}\n' % (seq, clock()))
                stdin.flush()
        finally:
            stdin.close()

    writer = threading.Thread(target=write, daemon=True)
    latencies: list[float] = []
    first_at = last_at = 0.0
    try:
        writer.start()
        for line in process.stdout:
            now = time.perf_counter()
            record = json.loads(line)
            if record["seq"] < warmup:
                ready.set()
                first_at = now
                continue
            last_at = now
            latencies.append(now - record["sent"])
        writer.join()
    finally:
        reap(process)
    return _summary(latencies, last_at - first_at, count - warmup)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=int, default=500)
    args = parser.parse_args()
    prepare_environment()
    for name, row in embedding(args.rate, args.seconds, args.warmup).items():
        print(f"embedding, from {name:9s}: {row}")
    print(f"cli:                       {cli(args.rate, args.seconds, args.warmup)}")
    print(f"closed loop:               {closed_loop(2000, args.warmup)}")


if __name__ == "__main__":
    main()
