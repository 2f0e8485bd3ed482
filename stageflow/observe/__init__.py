"""Watching a run: progress snapshots, the live display, Prometheus metrics, the JSON report.

Everything here is fed by one immutable :class:`Progress` snapshot that the coordinator
builds in :meth:`~stageflow.engine.coordinator.Coordinator.progress`; nothing reaches into
the engine's internals, so the engine can change while these front ends stay as they are.
"""

from stageflow.observe.notebook import show_progress
from stageflow.observe.snapshot import Progress, StageProgress, WorkerProgress

__all__ = ["Progress", "StageProgress", "WorkerProgress", "show_progress"]
