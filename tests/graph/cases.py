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


CASES = {"wordcount": wordcount, "mismatch": mismatch, "hostile": hostile}
