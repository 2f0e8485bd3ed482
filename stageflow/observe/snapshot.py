"""The progress snapshot: what a run has done so far, as plain immutable data.

The coordinator builds one in its ``progress()`` method, in its own thread; the display,
the metrics endpoint, the stall watch and ``Run.progress()`` only read snapshots, so none
of them touches live engine state from another thread.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Progress", "StageProgress", "WorkerProgress"]


@dataclass(frozen=True)
class WorkerProgress:
    """One worker position of a stage (``name`` is ``stage#index``)."""

    name: str
    pid: int | None
    ready: bool
    processed: int
    busy_seconds: float
    #: Input line of the record the worker is inside process() for, None when it is not
    #: (0 for a record made by finish(), which has no line).
    current_line: int | None
    #: Frames sent to this worker and not yet acknowledged; None when the engine does not
    #: track frames per worker.
    held_frames: int | None = None


@dataclass(frozen=True)
class StageProgress:
    """One stage: its workers and what they did."""

    name: str
    workers: tuple[WorkerProgress, ...]
    processed: int
    busy_seconds: float
    #: Frames the coordinator holds for this stage because no worker could take them yet.
    queued_frames: int
    restarts: int
    dead_letters: int
    #: Frames sent to its workers so far, redeliveries included (a fused group's, for each of
    #: its stages); records per frame is how well input is batched.
    frames_sent: int = 0

    @property
    def ready_workers(self) -> int:
        return sum(worker.ready for worker in self.workers)


@dataclass(frozen=True)
class Progress:
    """A run at one moment. ``elapsed`` is seconds since the run started."""

    pipeline: str
    elapsed: float
    records_in: int
    records_done: int
    results: int
    dead_lettered: int
    in_flight: int
    worker_restarts: int
    redeliveries: int
    stages: tuple[StageProgress, ...]
    #: Dead letters counted as (stage, error name, count).
    dead_letters: tuple[tuple[str, str, int], ...] = ()
    #: Input read to result written: per time bucket (stageflow.engine.timing), and the sum.
    latency: tuple[tuple[int, int], ...] = ()
    latency_seconds: float = 0.0
    #: True on the last snapshot, taken after the run ended.
    ended: bool = False

    @property
    def busy_seconds(self) -> float:
        return sum(stage.busy_seconds for stage in self.stages)

    def busy_share(self, stage: StageProgress) -> float:
        """The stage's part of all the time spent inside process(), 0 to 1."""
        total = self.busy_seconds
        return stage.busy_seconds / total if total else 0.0

    @property
    def slowest(self) -> StageProgress | None:
        """The stage with the most busy time per worker: the one that limits throughput."""
        busy = [stage for stage in self.stages if stage.busy_seconds > 0]
        if not busy:
            return None
        return max(busy, key=lambda stage: stage.busy_seconds / max(1, len(stage.workers)))
