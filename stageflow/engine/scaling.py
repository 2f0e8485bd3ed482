"""Runtime scaling: requests from any thread and the autoscaler's decisions, applied by the loop.

``Run.scale()`` may be called from another thread while the run iterates; the request goes
into a thread-safe queue and the loop applies it between two turns, through the pool (which
starts or retires workers) and dispatch (which stops sending to a retiring one). Stages with
``workers: {min, max}`` are also scaled by the :mod:`~stageflow.engine.autoscale` autoscaler
while input flows. A ``run.scale()`` of an autoscaled stage sets its count within its bounds
(outside them is a ``ValueError``; ``add_worker``/``remove_worker`` stop at them), and the
autoscaler carries on from that count after its cool-down. Every change is logged in one
line and kept in the report's ``scalings``.
"""

from __future__ import annotations

import logging
import queue
import time
from collections.abc import Sequence

from stageflow.engine.autoscale import Autoscaler
from stageflow.engine.dispatch import Dispatch
from stageflow.engine.keying import check_scalable
from stageflow.engine.pool import Pool
from stageflow.engine.report import RunReport
from stageflow.pipeline import BoundStage
from stageflow.plan import Unit

__all__ = ["Scaling", "check_request"]

log = logging.getLogger("stageflow.engine")

#: Changes kept in the report; the log has them all.
KEPT_SCALINGS = 1000


def check_request(stage: BoundStage, count: int, relative: bool) -> None:
    """Refuse, with a ValueError saying why, a scaling ``stage`` can never get."""
    if not relative and count < 1:
        raise ValueError(f"a stage needs at least 1 worker, not {count}")
    check_scalable(stage)
    bounds = stage.bounds
    if bounds is not None and not relative and not bounds.min <= count <= bounds.max:
        raise ValueError(
            f"stage {stage.name!r} autoscales within {bounds.min}..{bounds.max} workers "
            f"(`workers: {{min: {bounds.min}, max: {bounds.max}}}`), so it cannot have {count}"
        )


class Scaling:
    """Worker counts asked for, and applying them."""

    def __init__(
        self,
        units: Sequence[Unit],
        pool: Pool,
        dispatch: Dispatch,
        report: RunReport,
        credit: int,
    ) -> None:
        self.units = units
        self.names = [unit.name for unit in units]
        # A stage inside a fused group scales its group: both names find the unit.
        self._units = {unit.name: unit.index for unit in units}
        self._units.update({stage.name: unit.index for unit in units for stage in unit.stages})
        self._entries = [unit.stages[0] for unit in units]
        self.pool = pool
        self.dispatch = dispatch
        self.report = report
        self.autoscaler = Autoscaler(units, pool, dispatch, credit)
        self._started = time.monotonic()
        self._requests: queue.SimpleQueue[tuple[int, int, bool]] = queue.SimpleQueue()
        for unit in units:
            for stage in unit.stages:
                report.peak_workers[stage.name] = unit.workers

    def request(self, stage: str, count: int, relative: bool = False) -> None:
        """Ask for ``count`` workers of ``stage`` (or ``count`` more); safe from any thread."""
        if stage not in self._units:
            known = ", ".join(sorted(self._units))
            raise ValueError(f"no stage named {stage!r}; the stages are {known}")
        check_request(self._entries[self._units[stage]], count, relative)
        self._requests.put((self._units[stage], count, relative))

    def apply(self, autoscale: bool = False) -> None:
        """Apply the requests made since the last call, then, if ``autoscale``, the
        autoscaler's decisions (from the loop's thread)."""
        now = time.monotonic()
        while True:
            try:
                unit, count, relative = self._requests.get_nowait()
            except queue.Empty:
                break
            before = self.pool.wanted(unit)
            target = max(1, before + count if relative else count)
            bounds = self.units[unit].bounds
            if bounds is not None:
                target = min(max(target, bounds.min), bounds.max)
            self._scale(unit, target, "scale()", now)
        if autoscale and self.autoscaler.watched:
            for decision in self.autoscaler.step(now):
                self._scale(decision.unit, decision.target, f"autoscaler: {decision.why}", now)

    def _scale(self, unit: int, target: int, why: str, now: float) -> None:
        before = self.pool.wanted(unit)
        for member in self.pool.scale(unit, target, now):
            self.dispatch.withhold(member)
        self.autoscaler.changed(unit, now)
        if target == before:
            return
        name = self.names[unit]
        log.info("stage %s: %d → %d workers (%s)", name, before, target, why)
        self.report.scalings.append(
            {
                "stage": name,
                "before": before,
                "after": target,
                "why": why,
                "seconds": round(now - self._started, 3),
            }
        )
        del self.report.scalings[:-KEPT_SCALINGS]
        for stage in self.units[unit].stages:
            self.report.peak_workers[stage.name] = max(
                self.report.peak_workers.get(stage.name, 0), target
            )
