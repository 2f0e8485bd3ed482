"""The run report as JSON: format ``stageflow-run-report/1``, described by pydantic models.

The models are the format's definition: ``schemas/run-report.schema.json`` is generated
from them (``stageflow schema --all -o schemas``) and the README documents the same keys.
Within version 1 keys are only added; a key that changes meaning or goes away bumps it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from stageflow.engine.timing import quantile

if TYPE_CHECKING:
    from stageflow.engine.report import RunReport

__all__ = [
    "FORMAT",
    "DeadLetterCounts",
    "LatencySummary",
    "Resume",
    "RunReportDocument",
    "ScalingEvent",
    "StageReport",
    "StatefulReport",
    "report_document",
    "report_schema",
    "report_to_json",
]

FORMAT: Literal["stageflow-run-report/1"] = "stageflow-run-report/1"

Outcome = Literal[
    "completed", "records-failed", "interrupted", "engine-error", "incomplete", "state-lost"
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StageReport(_Strict):
    """What one stage did over the whole run."""

    name: str
    workers: int = Field(description="Worker processes configured for the stage.")
    peak_workers: int = Field(
        default=0,
        description="The most workers the stage had asked for at once (more than workers "
        "when run.scale() or the autoscaler grew it).",
    )
    records_in: int = Field(
        description="process() calls that completed, or records rejected by the stage's Input "
        "(a record delivered again after a worker died counts again)."
    )
    records_out: int = Field(
        description="Records the stage passed on: the next stage's records_in, or the "
        "results for the last stage."
    )
    busy_seconds: float = Field(description="Seconds the stage's workers spent in process().")
    busy_share: float = Field(description="busy_seconds over all stages' busy seconds, 0 to 1.")
    records_per_second: float = Field(description="records_in over the run's seconds.")
    mean_seconds: float | None = Field(description="Mean time of one process() call.")
    p99_seconds: float | None = Field(
        description="99th percentile of one process() call (upper edge of its time bucket, "
        "within 19%)."
    )
    restarts: int = Field(description="Workers of the stage that died and were restarted.")
    dead_letters: dict[str, int] = Field(description="Dead letters of the stage by error name.")
    slowest: bool = Field(description="The stage with the most busy time per worker.")


class ScalingEvent(_Strict):
    """One change of a stage's worker count during the run."""

    stage: str = Field(description="The stage, or a fused group as its stages joined by +.")
    before: int
    after: int
    why: str = Field(description="scale(), or `autoscaler: ` and the autoscaler's reason.")
    seconds: float = Field(description="Seconds after the run started.")


class DeadLetterCounts(_Strict):
    total: int
    by_stage: dict[str, dict[str, int]] = Field(description="stage → error name → count.")


class LatencySummary(_Strict):
    """Input read to result handed to the writer, over the records that produced results."""

    count: int
    mean_seconds: float
    p50_seconds: float
    p99_seconds: float


class Resume(_Strict):
    """How to go on after a run that stopped early."""

    skip: int = Field(description="Input lines fully processed.")
    hint: str | None = Field(description="The options to resume with, as the CLI printed them.")


class StatefulReport(_Strict):
    """How the stateful stages fared (those that override finish() or set stateful: true)."""

    finish_exact: bool = Field(description="Every finish() saw each record exactly once.")
    state_lost: list[str] = Field(description="One sentence per worker lost with its state.")
    redeliveries: int = Field(description="Records sent again into a stateful stage.")
    duplicates_refused: int = Field(
        description="Records kept out of a stateful stage that had taken them in before."
    )
    snapshots_taken: int
    snapshots_restored: int


class RunReportDocument(_Strict):
    """One run of a stageflow pipeline, written by `stageflow run --report FILE`."""

    format: Literal["stageflow-run-report/1"]
    pipeline: str
    stageflow_version: str
    started_at: str | None = Field(description="ISO 8601 UTC time the run started.")
    ended_at: str | None = Field(description="ISO 8601 UTC time the run ended.")
    seconds: float
    outcome: Outcome
    exit_status: int | None = Field(description="The CLI's exit status; null from Python.")
    error: str | None = Field(description="The engine error that ended the run, if any.")
    records_in: int
    records_done: int = Field(description="Input records fully processed.")
    results: int
    dead_letters: DeadLetterCounts
    redeliveries: int = Field(description="Records delivered again after a worker died.")
    worker_restarts: int
    stateful: StatefulReport
    stages: list[StageReport]
    scalings: list[ScalingEvent] = Field(
        default_factory=list, description="Changes of worker counts, oldest first (the last 1000)."
    )
    latency: LatencySummary | None = Field(description="null when it was not measured.")
    resume: Resume | None = Field(description="null unless the run stopped early.")


def report_document(report: RunReport) -> RunReportDocument:
    """The ``stageflow-run-report/1`` document of ``report``."""
    from stageflow import __version__

    names = list(report.stage_workers) or list(report.processed)
    total_busy = sum(report.busy.values())
    per_worker = {
        name: report.busy.get(name, 0.0) / max(1, report.stage_workers.get(name, 1))
        for name in names
    }
    slowest = max(per_worker, key=per_worker.__getitem__) if total_busy else None
    stages = []
    for index, name in enumerate(names):
        records_in = report.processed.get(name, 0)
        busy = report.busy.get(name, 0.0)
        out = (
            report.processed.get(names[index + 1], 0) if index + 1 < len(names) else report.results
        )
        stages.append(
            StageReport(
                name=name,
                workers=report.stage_workers.get(name, 0),
                peak_workers=report.peak_workers.get(name, report.stage_workers.get(name, 0)),
                records_in=records_in,
                records_out=out,
                busy_seconds=busy,
                busy_share=busy / total_busy if total_busy else 0.0,
                records_per_second=records_in / report.seconds if report.seconds else 0.0,
                mean_seconds=busy / records_in if records_in else None,
                p99_seconds=report.record_time(name, 0.99),
                restarts=report.restarts.get(name, 0),
                dead_letters=dict(report.dead_by_stage.get(name, {})),
                slowest=name == slowest,
            )
        )
    return RunReportDocument(
        format=FORMAT,
        pipeline=report.pipeline,
        stageflow_version=__version__,
        started_at=_iso(report.started_at),
        ended_at=_iso(report.ended_at),
        seconds=report.seconds,
        outcome=_outcome(report),
        exit_status=report.exit_status,
        error=report.error,
        records_in=report.records_in,
        records_done=report.records_done,
        results=report.results,
        dead_letters=DeadLetterCounts(
            total=report.dead_lettered,
            by_stage={stage: dict(errors) for stage, errors in report.dead_by_stage.items()},
        ),
        redeliveries=report.redeliveries,
        worker_restarts=report.worker_restarts,
        stateful=StatefulReport(
            finish_exact=report.finish_exact,
            state_lost=list(report.state_lost),
            redeliveries=report.stateful_redelivered,
            duplicates_refused=report.duplicates_refused,
            snapshots_taken=report.snapshots_taken,
            snapshots_restored=report.snapshots_restored,
        ),
        stages=stages,
        scalings=[ScalingEvent(**event) for event in report.scalings],
        latency=_latency(report),
        resume=(
            Resume(skip=report.last_line_read, hint=report.resume_hint)
            if report.interrupted
            else None
        ),
    )


def report_to_json(report: RunReport) -> str:
    """``report`` as indented ``stageflow-run-report/1`` JSON text."""
    return report_document(report).model_dump_json(indent=2) + "\n"


def report_schema() -> dict[str, Any]:
    """The JSON Schema of the format (``schemas/run-report.schema.json``)."""
    schema = RunReportDocument.model_json_schema(mode="serialization")
    schema["$id"] = FORMAT
    return schema


def _outcome(report: RunReport) -> Outcome:
    if report.error is not None:
        return "engine-error"
    if report.interrupted:
        return "interrupted"
    if not report.finished:
        return "incomplete"
    if report.state_lost:
        return "state-lost"
    return "records-failed" if report.dead_lettered > report.max_errors else "completed"


def _iso(stamp: float | None) -> str | None:
    if stamp is None:
        return None
    return datetime.fromtimestamp(stamp, UTC).isoformat(timespec="milliseconds")


def _latency(report: RunReport) -> LatencySummary | None:
    count = sum(report.latency.values())
    if not count:
        return None
    return LatencySummary(
        count=count,
        mean_seconds=report.latency_seconds / count,
        p50_seconds=quantile(report.latency, 0.5) or 0.0,
        p99_seconds=quantile(report.latency, 0.99) or 0.0,
    )
