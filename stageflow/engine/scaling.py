"""Runtime scaling: requests from any thread, applied by the coordinator's loop.

``Run.scale()`` may be called from another thread while the run iterates; the request goes
into a thread-safe queue and the loop applies it between two turns, through the pool (which
starts or retires workers) and dispatch (which stops sending to a retiring one).
"""

from __future__ import annotations

import logging
import queue
import time

from stageflow.engine.dispatch import Dispatch
from stageflow.engine.keying import check_scalable
from stageflow.engine.pool import Pool

__all__ = ["Scaling"]

log = logging.getLogger("stageflow.engine")


class Scaling:
    """Worker counts asked for, and applying them."""

    def __init__(self, stage_names: list[str], pool: Pool, dispatch: Dispatch) -> None:
        self.names = stage_names
        self.pool = pool
        self.dispatch = dispatch
        self._requests: queue.SimpleQueue[tuple[int, int, bool]] = queue.SimpleQueue()

    def request(self, stage: str, count: int, relative: bool = False) -> None:
        """Ask for ``count`` workers of ``stage`` (or ``count`` more); safe from any thread."""
        if stage not in self.names:
            raise ValueError(f"no stage named {stage!r}; the stages are {', '.join(self.names)}")
        if not relative and count < 1:
            raise ValueError(f"a stage needs at least 1 worker, not {count}")
        check_scalable(self.pool.pipeline.stages[self.names.index(stage)])
        self._requests.put((self.names.index(stage), count, relative))

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
