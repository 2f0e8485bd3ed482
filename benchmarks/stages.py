"""Trivial stages for the latency and startup benchmarks: they pass a stamped record on.

Referenced from pipeline files as ``benchmarks.stages:Pass`` (importable from the repo root).
"""

from __future__ import annotations

import hashlib

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


class Work(BaseModel):
    """A record asking for ``rounds`` rounds of hashing: CPU work of a known size."""

    seq: int
    rounds: int


class Burn(stageflow.Stage):
    """Hash the record's number ``rounds`` times: a CPU-bound stage, for scaling figures."""

    name = "bench-burn"
    Input = Work
    Output = Work

    def process(self, item: Work) -> Work:
        digest = str(item.seq).encode()
        for _ in range(item.rounds):
            digest = hashlib.sha256(digest).digest()
        return item
