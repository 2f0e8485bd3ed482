"""The end of the stream: ``finish()`` stage by stage, once every input record is done.

Stage 0's workers run ``finish()`` first; what they return enters stage 1 as new records,
and stage 1 finishes once those are done too, and so on down the pipeline. A worker that
becomes ready while its stage is finishing (a replacement) is told to finish at once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from stageflow.engine.membership import Member

__all__ = ["Finishing"]

Send = Callable[[Member, dict[str, Any]], None]


class Finishing:
    """Drives the end of stream; :meth:`advance` it whenever nothing is in flight."""

    def __init__(self, stages: int, send: Send) -> None:
        self.stages = stages
        self.send = send
        self.stage: int | None = None

    def advance(
        self, members: Callable[[int], list[Member]], pending: Callable[[int], bool]
    ) -> bool:
        """Take the next step; return False once every stage has finished."""
        if self.stage is None:
            self.stage = 0
            self._start(members(0))
            return True
        if pending(self.stage) or not all(m.finished for m in members(self.stage) if m.ready):
            return True
        self.stage += 1
        if self.stage == self.stages:
            return False
        self._start(members(self.stage))
        return True

    def on_ready(self, member: Member) -> None:
        if member.stage == self.stage:
            self.send(member, {"t": "finish"})

    def _start(self, members: list[Member]) -> None:
        for member in members:
            if member.ready and not member.retiring:
                self.send(member, {"t": "finish"})
