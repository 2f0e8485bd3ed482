"""Nothing lost: worker deaths, poison records, hangs and malformed frames."""

from __future__ import annotations

import contextlib
import logging
import os
import random
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from stageflow import Pipeline
from tests.engine.stages import CountWords, FanOut, Split


@pytest.mark.timeout(240)
def test_chaos_kill_9_redoes_at_most_two_frames_per_death(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """20 kill -9 of random workers, 0.3 s apart, on 3x2 workers with fan-out and a filter."""
    pipeline = Pipeline(
        "chaos",
        [
            {"name": "split", "uses": Split, "workers": 2, "config": {"pause": 0.0002}},
            {"name": "fan", "uses": FanOut, "workers": 2},
            {"name": "resplit", "uses": Split, "workers": 2},
        ],
    )
    storm_over = threading.Event()
    fed = []

    def items() -> Iterator[dict[str, str]]:
        # Input lasts until the storm is over, and a little longer.
        i, end = 0, None
        while end is None or i < end:
            if end is None and storm_over.is_set():
                end = i + 2000
            fed.append(i)
            yield {"id": str(i), "text": " ".join(["w"] * (i % 4))}  # 0 words: filtered
            i += 1

    run = pipeline.run(items())
    kills: set[int] = set()

    def storm() -> None:
        rng = random.Random(7)
        while len(kills) < 20:
            # A worker already killed can be listed until the coordinator notices.
            ready = [w for w in run.workers() if w.state == "ready" and w.pid not in kills]
            if ready:
                victim = rng.choice(ready)
                assert victim.pid is not None
                with contextlib.suppress(ProcessLookupError):
                    os.kill(victim.pid, signal.SIGKILL)
                    kills.add(victim.pid)
            time.sleep(0.3)  # the pace of the storm, not a synchronisation
        storm_over.set()

    killer = threading.Thread(target=storm)
    seen: Counter[str] = Counter()
    stalls = [0.0]
    last = None
    with caplog.at_level(logging.INFO, logger="stageflow.engine"):
        for result in run:
            now = time.monotonic()
            if last is None:
                killer.start()
            elif not storm_over.is_set():
                stalls.append(now - last)
            last = now
            seen[result.id] += 1
    killer.join()
    expected = Counter(f"{i}.{j}" for i in fed for j in range(i % 4))
    assert seen == expected
    assert len(kills) == 20 and run.report.ok
    held = [
        int(r.getMessage().split("; the ")[1].split()[0])
        for r in caplog.records
        if "records it held go to its peers" in r.getMessage()
    ]
    assert len(held) == 20
    assert max(held) <= 2 * 256, held  # at most 2 frames of the default batch size
    assert run.report.redeliveries == sum(held)
    # Output stops only while a stage has no worker left: at most the time a replacement
    # takes to start (the launcher's job), plus a second or two.
    starts = [
        float(r.getMessage().split(", ")[1].split("s ")[0])
        for r in caplog.records
        if "is ready, " in r.getMessage()
    ]
    assert max(stalls) < 2.0 + max(starts, default=0.0), (sorted(stalls)[-3:], starts)


def test_poison_record_is_dead_lettered_after_three_deaths(tmp_path: Path) -> None:
    """A record that kills every worker it touches is set aside after 3 deaths; the rest pass."""
    pipeline = Pipeline(
        "poison",
        [
            {"name": "split", "uses": Split, "workers": 2, "config": {"crash_on": "poison"}},
            {"name": "count", "uses": CountWords},
        ],
    )
    items = [{"id": str(i), "text": "poison" if i == 300 else "a b"} for i in range(1000)]
    run = pipeline.run(items, max_errors=1)
    ids = [result.id for result in run]
    assert sorted(ids, key=int) == [str(i) for i in range(1000) if i != 300]
    (entry,) = run.report.dead_letters
    assert entry["line"] == 301 and entry["error"] == "PoisonRecord"
    assert entry["record"] == {"id": "300", "text": "poison"}
    assert run.report.worker_restarts == 3 and run.report.ok


def test_hanging_record_times_out(tmp_path: Path) -> None:
    """A hanging process() is cut off by the timeout, even inside `except Exception`."""
    pipeline = Pipeline(
        "hang",
        [{"name": "split", "uses": Split, "timeout": 0.5, "config": {"hang_on": "zzz"}}],
    )
    items = [{"id": "1", "text": "a"}, {"id": "2", "text": "zzz"}, {"id": "3", "text": "b c"}]
    run = pipeline.run(items, max_errors=1)
    assert sorted(r.id for r in run) == ["1", "3"]
    (entry,) = run.report.dead_letters
    assert entry["line"] == 2 and entry["error"] == "RecordTimeout"


def test_frames_stay_under_the_message_size_limit() -> None:
    """Batches are split by bytes, and a record too big for any frame is dead-lettered."""
    pipeline = Pipeline(
        "big",
        [{"name": "split", "uses": Split, "workers": 2}, {"name": "count", "uses": CountWords}],
    )
    words = " ".join(["word"] * 200)  # about 1 KB per record, 20 records per 20 KB
    items = [{"id": str(i), "text": words} for i in range(300)]
    items.append({"id": "huge", "text": "x " * 10_000})  # 20 KB: over any frame
    run = pipeline.run(items, max_message_size=20_000, max_errors=1)
    results = {result.id: result.words for result in run}
    assert results == {str(i): 200 for i in range(300)}
    (entry,) = run.report.dead_letters
    assert entry["error"] == "RecordTooLarge" and entry["line"] == 301
