"""A run's numbers laid on the graph: what ``stageflow graph --report FILE`` draws.

The overlay is read from a ``stageflow-run-report/1`` file and attached to the
:class:`~stageflow.graph.model.Graph`; each renderer adds it to what it draws anyway
(numbers in the stage boxes, records on the edges, dead letters in red, the slowest stage
marked), so a graph without a report is drawn exactly as before.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

from pydantic import ValidationError

from stageflow.errors import PipelineError
from stageflow.graph.model import Graph
from stageflow.observe.report_json import RunReportDocument, StageReport

__all__ = ["Overlay", "StageFigures", "load_overlay", "with_overlay"]


@dataclass(frozen=True)
class StageFigures:
    """One stage's numbers, with the short phrases every format prints."""

    report: StageReport

    @property
    def summary(self) -> str:
        """E.g. ``2,000 records · 173 rec/s · busy 78%``."""
        r = self.report
        return (
            f"{r.records_in:,} records · {r.records_per_second:,.0f} rec/s · "
            f"busy {r.busy_share:.0%}"
        )

    @property
    def dead_letters(self) -> int:
        return sum(self.report.dead_letters.values())

    @property
    def dead_summary(self) -> str | None:
        """E.g. ``✗ 3 dead letters (ValidationError 2, RuntimeError 1)``; None without any."""
        if not self.dead_letters:
            return None
        kinds = ", ".join(f"{error} {n}" for error, n in self.report.dead_letters.items())
        noun = "letter" if self.dead_letters == 1 else "letters"
        return f"✗ {self.dead_letters} dead {noun} ({kinds})"

    @property
    def slowest(self) -> bool:
        return self.report.slowest


@dataclass(frozen=True)
class Overlay:
    """The report of one run of the drawn pipeline."""

    document: RunReportDocument
    stages: tuple[StageFigures, ...]

    @property
    def caption(self) -> str:
        """E.g. ``run: completed · 2,000 records in, 2,000 results in 11.5s``."""
        d = self.document
        return (
            f"run: {d.outcome} · {d.records_in:,} records in, {d.results:,} results, "
            f"{d.dead_letters.total:,} dead letters in {d.seconds:.1f}s"
        )

    def edge_label(self, target: int) -> str:
        """What the edge into stage ``target`` carried (``len(stages)``: the results)."""
        if target == len(self.stages):
            return f"{self.document.results:,} results"
        return f"{self.stages[target].report.records_in:,} records"


def load_overlay(path: str | Path) -> Overlay:
    """Read a run report file; raise PipelineError naming the problem if it is not one."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise PipelineError(f"cannot read the report {str(path)!r}: {exc.strerror}") from exc
    try:
        document = RunReportDocument.model_validate(json.loads(text))
    except (ValueError, ValidationError) as exc:
        raise PipelineError(
            f"{str(path)!r} is not a stageflow-run-report/1 file ({str(exc).splitlines()[0]}); "
            "write one with `stageflow run ... --report FILE`"
        ) from exc
    return Overlay(document, tuple(StageFigures(stage) for stage in document.stages))


def with_overlay(graph: Graph, overlay: Overlay) -> Graph:
    """``graph`` with ``overlay`` on it; the report must be of the same stages."""
    drawn = [stage.name for stage in graph.stages]
    reported = [figures.report.name for figures in overlay.stages]
    if drawn != reported:
        raise PipelineError(
            f"the report is of stages {', '.join(reported) or 'none'} "
            f"(pipeline {overlay.document.pipeline!r}), but the pipeline draws "
            f"{', '.join(drawn)}; give the report of a run of this pipeline"
        )
    return replace(graph, overlay=overlay)
