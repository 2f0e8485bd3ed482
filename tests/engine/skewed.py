"""A worker speaking another version of the wire format, as an old install would."""

from __future__ import annotations

from typing import Any

from stageflow.engine import wire, worker


def run_worker(settings: dict[str, Any]) -> int:
    wire.VERSION = 99
    return worker.run_worker(settings)
