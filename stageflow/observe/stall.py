"""Stall visibility: when a run makes no progress for a while, say who holds the work.

"Progress" is any record read, processed by a stage, written or dead-lettered. A run
with nothing in flight is waiting for its input, which is not a stall. When one is
found, the report names the stage whose workers are inside process(), each with its
pid, the input line of its record and how long it has been on it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from stageflow.observe.snapshot import Progress

__all__ = ["STALL_AFTER", "Stall", "StallWatch"]

log = logging.getLogger("stageflow.observe")

#: Seconds without progress after which a run counts as stalled.
STALL_AFTER = 30.0


@dataclass(frozen=True)
class Stall:
    """A run that made no progress for ``seconds``; ``message`` says who holds the work."""

    seconds: float
    stages: tuple[str, ...]
    workers: tuple[str, ...]
    message: str


class StallWatch:
    """Fed every snapshot; logs a warning when a stall starts and when it ends."""

    def __init__(self, after: float = STALL_AFTER) -> None:
        self.after = after
        self.stall: Stall | None = None
        self._mark: tuple[int, ...] | None = None
        self._since = 0.0
        # Per worker: what it was doing and since when (seconds into the run).
        self._doing: dict[str, tuple[tuple[int, int | None], float]] = {}

    def __call__(self, progress: Progress) -> None:
        self.update(progress)

    def update(self, progress: Progress) -> Stall | None:
        now = progress.elapsed
        for stage in progress.stages:
            for worker in stage.workers:
                state = (worker.processed, worker.current_line)
                seen = self._doing.get(worker.name)
                if seen is None or seen[0] != state:
                    self._doing[worker.name] = (state, now)
        mark = (
            progress.records_in,
            progress.records_done,
            progress.results,
            progress.dead_lettered,
            *(stage.processed for stage in progress.stages),
        )
        if mark != self._mark or not progress.in_flight or progress.ended:
            if self.stall is not None:
                log.warning("progress resumed after %.0fs without any", self.stall.seconds)
            self._mark, self._since, self.stall = mark, now, None
            return None
        quiet = now - self._since
        if quiet < self.after:
            return None
        first = self.stall is None
        self.stall = self._describe(progress, quiet, now)
        if first:
            log.warning("%s", self.stall.message)
        return self.stall

    def _describe(self, progress: Progress, quiet: float, now: float) -> Stall:
        sentences: list[str] = []
        stages: list[str] = []
        held: list[str] = []
        for stage in progress.stages:
            busy = [worker for worker in stage.workers if worker.current_line is not None]
            if not busy:
                continue
            parts = []
            for worker in busy:
                since = now - self._doing[worker.name][1]
                line = worker.current_line
                where = f"line {line}" if line else "a record finish() made"
                pid = f" (pid {worker.pid})" if worker.pid is not None else ""
                parts.append(f"{worker.name}{pid} inside process() on {where} for {since:.0f}s")
                held.append(worker.name)
            idle = len(stage.workers) - len(busy)
            tail = f", {idle} other worker{'s' if idle != 1 else ''} idle" if idle else ""
            sentences.append(f"stage {stage.name!r} holds the work: {', '.join(parts)}{tail}")
            stages.append(stage.name)
        if not sentences:
            queued = [f"{s.name} {s.queued_frames}" for s in progress.stages if s.queued_frames]
            down = [w.name for s in progress.stages for w in s.workers if not w.ready]
            sentences.append("no worker is inside process()")
            if queued:
                sentences.append("frames queued for " + ", ".join(queued))
            if down:
                sentences.append("workers not ready: " + ", ".join(down))
        message = (
            f"stalled: no progress for {quiet:.0f}s with {progress.in_flight} records in "
            f"flight; " + "; ".join(sentences)
        )
        return Stall(quiet, tuple(stages), tuple(held), message)
