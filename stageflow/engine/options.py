"""The options of one run: every knob the engine has, each with a safe default."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from stageflow.engine.launcher import Launcher
from stageflow.security import Keys

__all__ = ["MAX_SECONDS", "EngineOptions"]

_LOOPBACK = "tcp://127.0.0.1:*"
#: The longest timeout or period a run takes, in seconds (11.6 days: for ever, in practice).
#: Longer ones (or inf) overflow the clocks of poll(), select() and lock waits.
MAX_SECONDS = 1_000_000.0
#: The fields that are seconds, each positive and finite.
_SECONDS = ("start_timeout", "stop_timeout", "heartbeat_timeout", "stuck_after", "snapshot_seconds")


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
    #: How much nicer (``os.nice``) the local workers of every unit but the last run. When a
    #: pipeline's processes outnumber the cores, the scheduler shares the CPU per process,
    #: so a stage of few workers near the output (a collector, one stateful worker) gets a
    #: share by its process count, not by its need, and stalls everything before it; from a
    #: lower priority, upstream workers take what the downstream ones leave. They stay
    #: work-conserving: a downstream worker runs only on what upstream sent it. 0 turns it off.
    upstream_nice: int = 5

    def __post_init__(self) -> None:
        for name in _SECONDS:
            value = getattr(self, name)
            if not 0 < value <= MAX_SECONDS:
                raise ValueError(
                    f"{name} is {value!r}; give a number of seconds above 0 and at most "
                    f"{MAX_SECONDS:.0f}"
                )
        if not 0 <= self.upstream_nice <= 19:
            raise ValueError(
                f"upstream_nice is {self.upstream_nice}; give 0 to 19 (a niceness increment, "
                "0 for none)"
            )
