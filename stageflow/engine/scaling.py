"""Runtime scaling: requests from any thread, applied by the coordinator's loop.

``Run.scale()`` may be called from another thread while the run iterates; the request goes
into a thread-safe queue and the loop applies it between two turns, through the pool (which
starts or retires workers) and dispatch (which stops sending to a retiring one).
"""

from __future__ import annotations

import logging
import queue
import time
from collections.abc import Sequence

from stageflow.engine.dispatch import Dispatch
from stageflow.engine.keying import check_scalable
from stageflow.engine.pool import Pool
from stageflow.plan import Unit

__all__ = ["Scaling"]

log = logging.getLogger("stageflow.engine")


class Scaling:
    """Worker counts asked for, and applying them."""

    def __init__(self, units: Sequence[Unit], pool: Pool, dispatch: Dispatch) -> None:
        self.names = [unit.name for unit in units]
        # A stage inside a fused group scales its group: both names find the unit.
        self._units = {unit.name: unit.index for unit in units}
        self._units.update({stage.name: unit.index for unit in units for stage in unit.stages})
        self._entries = [unit.stages[0] for unit in units]
        self.pool = pool
        self.dispatch = dispatch
        self._requests: queue.SimpleQueue[tuple[int, int, bool]] = queue.SimpleQueue()

    def request(self, stage: str, count: int, relative: bool = False) -> None:
        """Ask for ``count`` workers of ``stage`` (or ``count`` more); safe from any thread."""
        if stage not in self._units:
            known = ", ".join(sorted(self._units))
            raise ValueError(f"no stage named {stage!r}; the stages are {known}")
        if not relative and count < 1:
            raise ValueError(f"a stage needs at least 1 worker, not {count}")
        check_scalable(self._entries[self._units[stage]])
        self._requests.put((self._units[stage], count, relative))

    def apply(self) -> None:
        """Apply the requests made since the last call (from the loop's thread)."""
        while True:
            try:
                stage, count, relative = self._requests.get_nowait()
            except queue.Empty:
                return
            before = self.pool.wanted(stage)
            target = max(1, before + count if relative else count)
            for member in self.pool.scale(stage, target, time.monotonic()):
                self.dispatch.withhold(member)
            if target != before:
                log.info("stage %s: %d → %d workers", self.names[stage], before, target)
