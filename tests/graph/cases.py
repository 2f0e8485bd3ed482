"""The pipelines the graph tests draw, built from Python objects so no plugin is needed."""

from __future__ import annotations

from pathlib import Path

from stageflow import Pipeline
from stageflow.graph import Graph, build_graph
from tests.graph import stages

HERE = Path(__file__).parent
PIPELINES = HERE / "pipelines"
GOLDEN = HERE / "golden"
REPO = HERE.parent.parent

REGEN_COMMAND = "python -m tests.graph.regen"
"""Rewrites every golden file from the current renderers; run from the repository root."""


def wordcount() -> Graph:
    """Two stages from a (pretend) installed plugin, models matching, one with a config."""
    return build_graph(
        Pipeline(
            "wordcount",
            [
                {"name": "split", "uses": "split", "workers": 2, "config": {"lowercase": False}},
                {"name": "count", "uses": "count", "workers": 3},
            ],
            registry=stages.registry(),
            source="examples/wordcount.yaml",
        )
    )


def mismatch() -> Graph:
    """split → tally, where tally reads a `words` field split never writes."""
    return build_graph(
        Pipeline(
            "mismatch",
            [{"name": "split", "uses": "split"}, {"name": "tally", "uses": "tally"}],
            registry=stages.registry(),
            check_schemas=False,
        )
    )


def hostile() -> Graph:
    """A stage and a model whose names hold characters special to every output format."""
    return build_graph(
        Pipeline(
            stages.HOSTILE,
            [
                {"name": "split", "uses": "split"},
                {"name": stages.HOSTILE, "uses": "hostile"},
            ],
            registry=stages.registry(),
            check_schemas=False,
        )
    )




def wordcount_report() -> Graph:
    """The wordcount graph with a run report on it: dead letters in both stages, split slowest."""
    from stageflow.engine.report import RunReport
    from stageflow.graph.overlay import Overlay, StageFigures, with_overlay
    from stageflow.observe.report_json import RunReportDocument

    report = RunReport("wordcount", records_in=1200, records_done=1200, results=1187)
    report.finished, report.seconds = True, 4.0
    report.stage_workers = {"split": 2, "count": 3}
    report.add_ack("split", "split#0", 1200, [3.0, [40, 1200]])
    report.add_ack("count", "count#0", 1190, [1.0, [30, 1190]])
    for stage, error, count in (("split", "ValidationError", 10), ("count", "RuntimeError", 3)):
        for _ in range(count):
            report.add_dead_letter({"stage": stage, "error": error})
    document = RunReportDocument.model_validate_json(report.to_json())
    overlay = Overlay(document, tuple(StageFigures(stage) for stage in document.stages))
    return with_overlay(wordcount(), overlay)


CASES = {
    "wordcount": wordcount,
    "mismatch": mismatch,
    "hostile": hostile,
    "wordcount-report": wordcount_report,
}
