"""A flood of forged frames on a worker's port: counted, and logged once a second."""

from __future__ import annotations

import re
import time

import pytest
import zmq

from stageflow import Pipeline
from stageflow.engine import wire
from stageflow.engine.coordinator import Coordinator, EngineOptions
from stageflow.engine.report import RunReport
from tests.engine.conftest import wait_until
from tests.engine.stages import Split
from tests.engine.test_fuzz import _head


def test_a_flood_of_forged_frames_costs_a_log_line_a_second(
    capfd: pytest.CaptureFixture[str],
) -> None:
    """5,000 forged frames on a worker's port log a line a second with the count, not 5,000."""
    pipeline = Pipeline("flood", [{"name": "split", "uses": Split}])
    coordinator = Coordinator(pipeline, RunReport("flood"), EngineOptions())
    context = zmq.Context()
    pusher = context.socket(zmq.PUSH)
    pusher.setsockopt(zmq.LINGER, 0)
    try:
        coordinator.start()  # after capfd took fd 2, so the worker's stderr is captured
        (member,) = coordinator.membership.members.values()
        pusher.connect(member.address or "")
        frame_id = (1).to_bytes(8, "little")
        forged = [
            frame_id,
            *wire.sign([_head(0, b"{}", wire.pack_ints([1, 0, 5])), b"{}"], wire.new_key()),
        ]
        started = time.monotonic()
        for _ in range(5000):
            pusher.send_multipart(forged)
        seen: list[str] = []

        def all_counted() -> bool:
            pusher.send_multipart(forged)  # one more each round, so the next interval logs
            seen.append(capfd.readouterr().err)
            totals = [int(n) for n in re.findall(r"\((\d+) in all\)", "".join(seen))]
            return bool(totals) and max(totals) >= 5000

        assert wait_until(all_counted, timeout=30, interval=0.05)
        lines = [line for line in "".join(seen).splitlines() if "the inbox rejected" in line]
        assert 2 <= len(lines) <= time.monotonic() - started + 2, lines
        assert lines[0].startswith("stageflow[split#0]: the inbox rejected 1 message (1 in all)")
    finally:
        pusher.close(linger=0)
        context.term()
        coordinator.close()
