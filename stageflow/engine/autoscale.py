"""The autoscaler: more workers where work waits, fewer where workers wait, within bounds.

A stage with ``workers: {min, max}`` is watched from the coordinator's loop. It is *under
pressure* when frames wait in its dispatch queue while every one of its ready workers holds
its full credit: work is there that nobody can take. A worker is *idle* when it has held no
frame and reported no record for :data:`IDLE_AFTER` seconds. Each step:

- of the stages under pressure for :data:`GROW_AFTER` seconds straight, below their ``max``,
  with no worker still starting and no stage downstream under pressure (that one is the
  bottleneck: more upstream workers would only fill its queue faster), the one with the most
  frames queued per worker gets one more worker (one stage a step, so the busiest is served
  first on a small machine);
- a stage above its ``min`` with nothing queued and an idle worker loses one worker, which
  finishes what it holds, runs ``finish()`` and exits (:mod:`~stageflow.engine.pool`).

Hysteresis: growing needs lasting pressure, shrinking a longer idleness, and a stage that
changed (by the autoscaler or by ``run.scale()``) is left alone for :data:`COOLDOWN` seconds,
so a bursty input does not make it flap. Only the loop's thread calls it.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

from stageflow.engine.dispatch import Dispatch
from stageflow.engine.membership import Member
from stageflow.engine.pool import Pool
from stageflow.pipeline import WorkerBounds
from stageflow.plan import Unit

__all__ = ["COOLDOWN", "GROW_AFTER", "IDLE_AFTER", "Autoscaler", "Decision"]

log = logging.getLogger("stageflow.engine")

#: Seconds a stage must stay under pressure before it grows.
GROW_AFTER = 0.5
#: Seconds a worker must hold nothing before its stage shrinks.
IDLE_AFTER = 2.0
#: Seconds a stage is left alone after its worker count changed.
COOLDOWN = 1.0
#: Seconds between two looks; the loop turns far more often.
_EVERY = 0.1


@dataclass(frozen=True)
class Decision:
    """Give unit ``unit`` ``target`` workers, because ``why``."""

    unit: int
    target: int
    why: str


@dataclass
class _Watched:
    """What the autoscaler remembers of one autoscaled unit."""

    unit: int
    bounds: WorkerBounds
    pressed_since: float | None = None
    changed_at: float = -math.inf
    #: Lowered to the count it had when the pool gave up on a worker that would not start:
    #: growing again would only start more workers that fail.
    most: int = 0
    given_up: int = 0
    #: Per worker key: when it last held a frame or reported a record, and its count then.
    busy_at: dict[str, float] = field(default_factory=dict)
    processed: dict[str, int] = field(default_factory=dict)


class Autoscaler:
    """Decides, from dispatch's queues and its workers' credit, who grows and who shrinks."""

    def __init__(self, units: Sequence[Unit], pool: Pool, dispatch: Dispatch, credit: int) -> None:
        self.pool = pool
        self.dispatch = dispatch
        self.credit = credit
        self.units = len(units)
        self.watched = {
            unit.index: _Watched(unit.index, unit.bounds, most=unit.bounds.max)
            for unit in units
            if unit.bounds is not None
        }
        self._last = -math.inf
        most = sum(unit.workers if unit.bounds is None else unit.bounds.max for unit in units)
        cpus = len(os.sched_getaffinity(0))
        if self.watched and most > cpus:
            # Never more than the bounds say, but say so when they exceed the machine.
            log.info(
                "autoscaling may run up to %d worker processes (the stages' max) on %d CPUs",
                most,
                cpus,
            )

    def changed(self, unit: int, now: float) -> None:
        """Note that ``unit``'s count changed now, whoever changed it: its cool-down starts."""
        watched = self.watched.get(unit)
        if watched is not None:
            watched.changed_at = now
            watched.pressed_since = None

    def step(self, now: float) -> list[Decision]:
        """What to change now; the caller applies it (and calls :meth:`changed`)."""
        if now - self._last < _EVERY:
            return []
        self._last = now
        seen = [self._pressure(unit) for unit in range(self.units)]
        decisions = []
        growing: list[tuple[float, Decision]] = []
        for watched in self.watched.values():
            takers, queued, pressed = seen[watched.unit]
            self._note_busy(watched, takers, now)
            self._note_given_up(watched)
            if not pressed:
                watched.pressed_since = None
            elif watched.pressed_since is None:
                watched.pressed_since = now
            if now - watched.changed_at < COOLDOWN or self.pool.pending(watched.unit):
                continue
            wanted = self.pool.wanted(watched.unit)
            if watched.pressed_since is not None:
                lasted = now - watched.pressed_since
                # Growing a stage while one downstream is under pressure too would only
                # move work into that one's queue: the downstream one goes first.
                later = any(pressure[2] for pressure in seen[watched.unit + 1 :])
                if lasted >= GROW_AFTER and wanted < watched.most and not later:
                    noun = "worker" if len(takers) == 1 else "workers"
                    why = (
                        f"{queued} frames queued for {len(takers)} {noun} at full credit "
                        f"for {lasted:.1f}s"
                    )
                    growing.append((queued / len(takers), Decision(watched.unit, wanted + 1, why)))
            elif queued == 0 and wanted > watched.bounds.min:
                idle = self._idlest(watched, takers, now)
                if idle is not None:
                    member, seconds = idle
                    why = f"worker {member.name} held no frame for {seconds:.1f}s"
                    decisions.append(Decision(watched.unit, wanted - 1, why))
        if growing:
            decisions.append(max(growing, key=lambda pair: pair[0])[1])
        return decisions

    def _pressure(self, unit: int) -> tuple[list[Member], int, bool]:
        """A unit's ready workers, its queued frames, and whether all those workers are full."""
        takers = self._takers(unit)
        queued = self.dispatch.queued(unit)
        full = all(self.dispatch.holds(m) >= self.credit for m in takers)
        return takers, queued, bool(takers) and queued > 0 and full

    def _note_given_up(self, watched: _Watched) -> None:
        given_up = self.pool.given_up[watched.unit]
        if given_up == watched.given_up:
            return
        watched.given_up = given_up
        watched.most = max(watched.bounds.min, self.pool.wanted(watched.unit))
        log.warning(
            "stage %s grows no further than %d workers in this run: a worker of it failed "
            "to start; see the log above for why",
            self.pool.units[watched.unit].name,
            watched.most,
        )

    def _takers(self, unit: int) -> list[Member]:
        return [m for m in self.pool.membership.of_stage(unit) if m.ready and not m.retiring]

    def _note_busy(self, watched: _Watched, takers: list[Member], now: float) -> None:
        live = {m.key for m in takers}
        for key in [key for key in watched.busy_at if key not in live]:
            del watched.busy_at[key], watched.processed[key]
        for member in takers:
            moved = watched.processed.get(member.key) != member.processed
            if moved or self.dispatch.holds(member):
                watched.busy_at[member.key] = now
                watched.processed[member.key] = member.processed

    def _idlest(
        self, watched: _Watched, takers: list[Member], now: float
    ) -> tuple[Member, float] | None:
        """The worker idle the longest, if one has been idle for :data:`IDLE_AFTER`."""
        idle = [(m, now - watched.busy_at[m.key]) for m in takers]
        if not idle:
            return None
        member, seconds = max(idle, key=lambda pair: pair[1])
        return (member, seconds) if seconds >= IDLE_AFTER else None
