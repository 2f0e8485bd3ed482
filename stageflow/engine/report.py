"""What a run reports: counts, dead letters, restarts, and whether it may count as success."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from stageflow.engine.timing import quantile

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
    #: Seconds spent inside process() per stage, and per worker ("stage#index").
    busy: dict[str, float] = field(default_factory=dict)
    worker_busy: dict[str, float] = field(default_factory=dict)
    #: Per stage, how many process() calls fell in each time bucket (stageflow.engine.timing).
    record_times: dict[str, dict[int, int]] = field(default_factory=dict)
    restarts: dict[str, int] = field(default_factory=dict)
    #: Dead letters counted by stage, then by error name (all of them, not only those kept).
    dead_by_stage: dict[str, dict[str, int]] = field(default_factory=dict)
    #: Records sent again because the worker holding them was lost or stuck.
    redeliveries: int = 0
    #: Wall-clock (time.time()) start and end of the run; None until it starts or ends.
    started_at: float | None = None
    ended_at: float | None = None
    #: The CLI's exit status, when the run was a `stageflow run`.
    exit_status: int | None = None
    #: The engine error that ended the run, if one did.
    error: str | None = None
    #: The options the CLI said to resume with, when the run stopped early.
    resume_hint: str | None = None
    #: Worker count per stage, in pipeline order, as the run started.
    stage_workers: dict[str, int] = field(default_factory=dict)
    #: The most workers each stage had asked for at once (scaled or autoscaled).
    peak_workers: dict[str, int] = field(default_factory=dict)
    #: Each change of a stage's worker count, oldest first (the last 1000): ``stage``,
    #: ``before``, ``after``, ``why`` (``scale()`` or the autoscaler's reason) and ``seconds``
    #: since the run started.
    scalings: list[dict[str, Any]] = field(default_factory=list)
    #: Input read to result written, in time buckets, and the sum in seconds; measured only
    #: when metrics or a report file were asked for.
    latency: dict[int, int] = field(default_factory=dict)
    latency_seconds: float = 0.0

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
            count = self.dead_lettered
            return (
                f"{count} {'record was' if count == 1 else 'records were'} dead-lettered, "
                f"more than the {self.max_errors} allowed"
            )
        return None

    def add_dead_letter(self, entry: dict[str, Any]) -> None:
        self.dead_lettered += 1
        errors = self.dead_by_stage.setdefault(str(entry.get("stage")), {})
        name = str(entry.get("error"))
        errors[name] = errors.get(name, 0) + 1
        if len(self.dead_letters) < KEPT_DEAD_LETTERS:
            self.dead_letters.append(entry)

    def add_ack(self, stage: str, worker: str, count: int, busy: Any) -> None:
        """Count a worker's acknowledgement: records processed, and its ``[seconds, buckets]``.

        ``busy`` is the ack's ``b`` field: seconds inside process() and the flat
        ``[bucket, count, ...]`` list of those calls' durations (absent from older workers).
        """
        self.processed[stage] = self.processed.get(stage, 0) + count
        self.per_worker[worker] = self.per_worker.get(worker, 0) + count
        if not busy:
            return
        seconds, buckets = busy
        self.busy[stage] = self.busy.get(stage, 0.0) + seconds
        self.worker_busy[worker] = self.worker_busy.get(worker, 0.0) + seconds
        times = self.record_times.setdefault(stage, {})
        for index in range(0, len(buckets), 2):
            bucket = buckets[index]
            times[bucket] = times.get(bucket, 0) + buckets[index + 1]

    def add_restart(self, *stages: str) -> None:
        """Count one worker restart, against each stage the worker hosted (a fused group's)."""
        self.worker_restarts += 1
        for stage in stages:
            self.restarts[stage] = self.restarts.get(stage, 0) + 1

    def record_time(self, stage: str, q: float) -> float | None:
        """The ``q`` quantile of one process() call's duration in ``stage``, in seconds."""
        return quantile(self.record_times.get(stage, {}), q)

    def to_json(self) -> str:
        """The report as a ``stageflow-run-report/1`` JSON document (see the README)."""
        from stageflow.observe.report_json import report_to_json

        return report_to_json(self)

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
