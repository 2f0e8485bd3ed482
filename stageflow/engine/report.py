"""What a run reports: counts, dead letters, restarts, and whether it may count as success."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["RunReport", "WorkerStatus"]

#: Dead-letter entries kept in memory on the report; the dead-letter file has them all.
KEPT_DEAD_LETTERS = 1000


@dataclass
class RunReport:
    """The outcome of one :meth:`stageflow.Pipeline.run`.

    ``ok`` is true only when the run reached the end of its input, was not interrupted,
    dead-lettered no more records than ``max_errors`` allowed and every ``finish()`` output
    is exact; :attr:`reason` says why not.
    """

    pipeline: str
    max_errors: int = 0
    records_in: int = 0
    records_done: int = 0
    results: int = 0
    dead_lettered: int = 0
    dead_letters: list[dict[str, Any]] = field(default_factory=list)
    worker_restarts: int = 0
    #: Records sent again because the worker holding them was lost or stuck.
    redelivered: int = 0
    #: Records sent again into a stateful stage, because its worker holding them was lost.
    stateful_redelivered: int = 0
    #: Records kept out of a stateful stage, which had taken them in under another attempt.
    duplicates_refused: int = 0
    #: Snapshots of stateful workers kept, and given to replacements.
    snapshots_taken: int = 0
    snapshots_restored: int = 0
    #: One sentence per stateful worker lost with its state (its stage's finish() is wrong).
    state_lost: list[str] = field(default_factory=list)
    processed: dict[str, int] = field(default_factory=dict)
    per_worker: dict[str, int] = field(default_factory=dict)
    finished: bool = False
    interrupted: bool = False
    last_line_read: int = 0
    #: Every input line up to this one is fully processed (results written or dead-lettered).
    complete_through: int = 0
    #: Input records after ``complete_through`` that are fully processed too.
    done_beyond: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.reason is None

    @property
    def finish_exact(self) -> bool:
        """Whether every stage's finish() saw each record exactly once (no state was lost)."""
        return not self.state_lost

    @property
    def reason(self) -> str | None:
        """Why the run is not ``ok``, in one sentence; None when it is."""
        if self.state_lost:
            return self.state_lost[0]
        if self.interrupted:
            return "the run was interrupted before the end of its input"
        if not self.finished:
            return "the run did not reach the end of its input"
        if self.dead_lettered > self.max_errors:
            return (
                f"{self.dead_lettered} records were dead-lettered, more than the "
                f"{self.max_errors} allowed"
            )
        return None

    def add_dead_letter(self, entry: dict[str, Any]) -> None:
        self.dead_lettered += 1
        if len(self.dead_letters) < KEPT_DEAD_LETTERS:
            self.dead_letters.append(entry)

    def summary(self) -> str:
        parts = [
            f"{self.records_done} of {self.records_in} input records processed",
            f"{self.results} {_plural(self.results, 'result')} written",
            f"{self.dead_lettered} dead-lettered",
        ]
        if self.worker_restarts:
            restarts = self.worker_restarts
            parts.append(f"{restarts} worker {_plural(restarts, 'restart')}")
        return f"pipeline {self.pipeline!r}: " + ", ".join(parts) + f" in {self.seconds:.2f}s"


@dataclass(frozen=True)
class WorkerStatus:
    """One live worker of a running pipeline, as ``Run.workers()`` lists it."""

    stage: str
    name: str  # "stage#slot"
    pid: int | None
    host: str | None
    state: str  # "starting", "ready" or "retiring"
    frames: int  # frames it holds now
    processed: int  # records it has processed


def _plural(count: int, word: str) -> str:
    return word if count == 1 else word + "s"
