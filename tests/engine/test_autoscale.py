"""The autoscaler: a stage with `workers: {min, max}` grows while work queues, shrinks when idle."""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from stageflow import Pipeline
from tests.engine.conftest import wait_until
from tests.engine.stages import FirstOnly, Relay, WhoAmI


def _workers_of(run: object, stage: str) -> list[str]:
    return [w.state for w in run.workers() if w.stage == stage]  # type: ignore[attr-defined]


@pytest.mark.timeout(60)
def test_the_slow_stage_grows_while_work_queues_then_shrinks_back_when_idle(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A slow {1..3} stage grows past 1 (a fast {1..3} one does not), shrinks to 1 when idle,
    every record exactly once, and each decision is one log line."""
    caplog.set_level(logging.INFO, logger="stageflow.engine")
    pipeline = Pipeline(
        "auto",
        [
            {"name": "fast", "uses": Relay, "workers": {"min": 1, "max": 3}},
            {
                "name": "slow",
                "uses": WhoAmI,
                "workers": {"min": 1, "max": 3},
                "config": {"pause": 0.01},
            },
        ],
    )
    first, second = 300, 20
    shrunk = threading.Event()
    holder: dict[str, object] = {}

    def items() -> Iterator[dict[str, str]]:
        yield from ({"id": str(i), "text": "a"} for i in range(first))
        # Input pauses (the run is idle, not finished) until the slow stage grew and is back
        # to one worker.
        run = holder["run"]
        grew = wait_until(lambda: len(_workers_of(run, "slow")) > 1, timeout=20)
        if grew and wait_until(lambda: _workers_of(run, "slow") == ["ready"], timeout=20):
            shrunk.set()
        yield from ({"id": str(i), "text": "a"} for i in range(first, first + second))

    # Small frames, so that the queue holds many while one worker holds its credit's worth.
    run = pipeline.run(items(), read_ahead=True, batch_size=8)
    holder["run"] = run
    results: Counter[str] = Counter()
    pids: set[int] = set()
    for result in run:
        results[result.id] += 1
        pids.add(result.pid)
    assert results == Counter(str(i) for i in range(first + second))
    assert shrunk.is_set(), run.report.scalings
    report = run.report
    assert report.ok
    assert report.peak_workers == {"fast": 1, "slow": report.peak_workers["slow"]}
    assert report.peak_workers["slow"] >= 2
    assert len(pids) >= 2  # the added workers did work
    slow = [event for event in report.scalings if event["stage"] == "slow"]
    assert slow[0]["before"] == 1 and slow[0]["after"] == 2
    assert "frames queued for 1 worker at full credit" in slow[0]["why"]
    assert slow[-1]["after"] == 1 and "held no frame for" in slow[-1]["why"]
    assert all(event["why"].startswith("autoscaler: ") for event in report.scalings)
    assert len(slow) <= 4  # up at most twice and down again: no flapping
    logged = [r.getMessage() for r in caplog.records if "workers (autoscaler: " in r.getMessage()]
    assert len(logged) == len(report.scalings)
    assert logged[0].startswith("stage slow: 1 → 2 workers (autoscaler: ")


def test_scale_of_an_autoscaled_stage_stays_within_its_bounds() -> None:
    """run.scale() outside {min..max} is a ValueError; inside, it sets the count to start from."""
    pipeline = Pipeline(
        "bounded", [{"name": "who", "uses": WhoAmI, "workers": {"min": 1, "max": 2}}]
    )
    run = pipeline.run([{"id": str(i), "text": "a"} for i in range(50)])
    with pytest.raises(ValueError, match=r"stage 'who' autoscales within 1\.\.2 workers"):
        run.scale("who", 3)
    run.scale("who", 2)
    run.add_worker("who")  # stops at max
    assert sorted(result.id for result in run) == sorted(str(i) for i in range(50))
    assert run.report.scalings[0]["before"] == 1 and run.report.scalings[0]["after"] == 2
    assert run.report.peak_workers == {"who": 2}
    assert set(run.report.per_worker) <= {"who#0", "who#1"}


@pytest.mark.timeout(60)
def test_a_stage_whose_added_workers_fail_to_start_stops_growing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Added workers that cannot start are given up on once, not retried for ever: exact output."""
    caplog.set_level(logging.INFO, logger="stageflow.engine")
    pipeline = Pipeline(
        "seat",
        [
            {
                "name": "seat",
                "uses": FirstOnly,
                "workers": {"min": 1, "max": 3},
                "config": {"claim": str(tmp_path / "seat"), "pause": 0.01},
            }
        ],
    )
    run = pipeline.run([{"id": str(i), "text": "a"} for i in range(300)], batch_size=8)
    assert sorted(result.id for result in run) == sorted(str(i) for i in range(300))
    messages = [record.getMessage() for record in caplog.records]
    assert sum("gave up on worker seat#1" in m for m in messages) == 1, messages
    assert not any("seat#2" in m for m in messages), messages
    assert sum("grows no further than 1 workers" in m for m in messages) == 1, messages
    assert [(e["before"], e["after"]) for e in run.report.scalings] == [(1, 2)]
