"""The options of one run: every knob the engine has, each with a safe default."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from stageflow.engine.launcher import Launcher
from stageflow.security import Keys

__all__ = ["EngineOptions"]

_LOOPBACK = "tcp://127.0.0.1:*"


@dataclass
class EngineOptions:
    """Tuning and safety knobs of one run; every field has a safe default."""

    batch_size: int = 256
    max_in_flight: int = 8192
    max_deaths: int = 3
    start_timeout: float = 60.0
    stop_timeout: float = 5.0
    max_start_failures: int = 3
    max_message_size: int = 64 * 1024 * 1024
    bind: str = _LOOPBACK
    log_level: int = logging.INFO
    #: A worker silent this long is lost; a worker that hears nothing this long exits.
    heartbeat_timeout: float = 10.0
    #: A record inside process() this long is logged, again every such period.
    stuck_after: float = 30.0
    #: Frames a worker may hold at once.
    credit: int = 2
    #: A stateful stage with snapshot()/restore() is snapshotted after this many records...
    snapshot_every: int = 2048
    #: ...or this many seconds, at a frame's end.
    snapshot_seconds: float = 1.0
    #: Starts the worker processes; when not given, a fork server for the run.
    launcher: Launcher | None = None
    #: Also accept workers joining from other hosts on this address (``tcp://HOST:PORT``).
    listen: str | None = None
    #: The CURVE keys of the sockets on ``listen`` (needed unless it is loopback).
    keys: Keys | None = None
    #: Run consecutive stages in one process where nobody can tell (stageflow.plan).
    fuse: bool = True
