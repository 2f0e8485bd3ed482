"""Each record's time from being read to its result being handed to the writer."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from stageflow.engine.timing import bucket_of

if TYPE_CHECKING:
    from stageflow.engine.report import RunReport
    from stageflow.engine.tracker import Root

__all__ = ["LatencyRecorder"]


class LatencyRecorder:
    """Notes when input records enter and counts, on the report, how long they took.

    A dict entry per record in flight: only made when metrics or a report file ask for it.
    """

    def __init__(self, report: RunReport) -> None:
        self._report = report
        self._read_at: dict[int, float] = {}

    def read(self, roots: Iterable[Root]) -> None:
        now = time.monotonic()
        read_at = self._read_at
        for root in roots:
            read_at[root.seq] = now

    def done(self, root: Root) -> None:
        """``root`` completed; count it if it produced results."""
        started = self._read_at.pop(root.seq, None)
        if started is None or not root.results:
            return
        spent = time.monotonic() - started
        report = self._report
        report.latency_seconds += spent
        bucket = bucket_of(spent)
        report.latency[bucket] = report.latency.get(bucket, 0) + 1
