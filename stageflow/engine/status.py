"""What a running coordinator shows outside: observe's progress snapshot, and its workers.

Both are built from the coordinator's own state as new immutable objects, so a reader in
another thread (a metrics scrape, a caller scaling the run) never walks live engine state.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from stageflow.engine.report import WorkerStatus
from stageflow.engine.runner import CurrentRecord
from stageflow.observe.snapshot import Progress, StageProgress, WorkerProgress

if TYPE_CHECKING:
    from stageflow.engine.coordinator import Coordinator
    from stageflow.engine.membership import Member

__all__ = ["progress", "workers"]


def workers(co: Coordinator) -> list[WorkerStatus]:
    """The live workers now; safe to call from another thread (a snapshot, maybe stale)."""
    return [
        WorkerStatus(
            stage=co.units[m.stage].name,
            name=m.name,
            pid=m.pid,
            host=m.host,
            state="retiring" if m.retiring else "ready" if m.ready else "starting",
            frames=co.dispatch.holds(m),
            processed=m.processed,
        )
        for m in list(co.membership.members.values())
    ]


def progress(co: Coordinator) -> Progress:
    """A snapshot of the run so far (see :mod:`stageflow.observe.snapshot`)."""
    report = co.report
    stages = []
    # A fused group's processes host each of its stages, so each stage lists them all.
    for unit in co.units:
        members = sorted(co.membership.of_stage(unit.index), key=lambda m: m.slot)
        for position, stage in enumerate(unit.stages):
            stages.append(
                StageProgress(
                    name=stage.name,
                    workers=tuple(_worker(co, m, stage.name, position) for m in members),
                    processed=report.processed.get(stage.name, 0),
                    busy_seconds=report.busy.get(stage.name, 0.0),
                    queued_frames=co.dispatch.queued(unit.index),
                    frames_sent=co.dispatch.sent[unit.index],
                    restarts=report.restarts.get(stage.name, 0),
                    dead_letters=sum(report.dead_by_stage.get(stage.name, {}).values()),
                )
            )
    return Progress(
        pipeline=report.pipeline,
        elapsed=time.monotonic() - co.started,
        records_in=report.records_in,
        records_done=report.records_done,
        results=report.results,
        dead_lettered=report.dead_lettered,
        in_flight=len(co.tracker.roots),
        worker_restarts=report.worker_restarts,
        redeliveries=report.redeliveries,
        stages=tuple(stages),
        dead_letters=tuple(
            (stage, error, count)
            for stage, errors in report.dead_by_stage.items()
            for error, count in errors.items()
        ),
        latency=tuple(sorted(report.latency.items())),
        latency_seconds=report.latency_seconds,
    )


def _worker(co: Coordinator, member: Member, stage: str, position: int) -> WorkerProgress:
    """``member`` as a worker of ``stage``, the stage at ``position`` in its unit."""
    current: tuple[int, ...] | None
    if member.current_path is not None:
        current = CurrentRecord.read(member.current_path)  # exact, for a local worker
    else:
        current = member.current  # as of its last heartbeat
    inside = current is not None and (current[2] if len(current) > 2 else 0) == position
    name = f"{stage}#{member.slot}"
    return WorkerProgress(
        name=name,
        pid=member.pid if member.pid is not None else getattr(member.process, "pid", None),
        ready=member.ready,
        processed=co.report.per_worker.get(name, 0),
        busy_seconds=co.report.worker_busy.get(name, 0.0),
        current_line=max(current[0], 0) if current is not None and inside else None,
        held_frames=co.dispatch.holds(member),
    )
