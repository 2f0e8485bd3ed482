"""Trivial stages for the latency and startup benchmarks: they pass a stamped record on.

Referenced from pipeline files as ``benchmarks.stages:Pass`` (importable from the repo root).
"""

from __future__ import annotations

from pydantic import BaseModel

import stageflow


class Stamped(BaseModel):
    """A record carrying its sequence number and its send time (``time.perf_counter()``)."""

    seq: int
    sent: float


class Pass(stageflow.Stage):
    """Return the record unchanged (validated on the way in, serialised on the way out)."""

    name = "bench-pass"
    Input = Stamped
    Output = Stamped

    def process(self, item: Stamped) -> Stamped:
        return item
