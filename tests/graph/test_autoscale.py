"""Every graph format shows an autoscaled stage's bounds, and that it is not fused."""

from __future__ import annotations

import json

from stageflow import Pipeline
from stageflow.graph import build_graph
from stageflow.graph.dot import render_dot
from stageflow.graph.html import render_html
from stageflow.graph.json import render_json
from stageflow.graph.mermaid import render_mermaid
from stageflow.graph.text import render_text
from tests.graph import stages


def _autoscaled() -> Pipeline:
    return Pipeline(
        "auto",
        [
            {"name": "split", "uses": "split", "workers": 2},
            {"name": "count", "uses": "count", "workers": {"min": 1, "max": 8, "initial": 2}},
        ],
        registry=stages.registry(),
        check_schemas=False,
    )


def test_json_carries_the_bounds_and_the_starting_count() -> None:
    """json: "autoscale" is {min, max} (null when fixed), "workers" the count at the start."""
    data = json.loads(render_json(build_graph(_autoscaled())))
    assert [s["autoscale"] for s in data["stages"]] == [None, {"min": 1, "max": 8}]
    assert [s["workers"] for s in data["stages"]] == [2, 2]
    assert [s["fused_group"] for s in data["stages"]] == [None, None]
    assert [e["fused"] for e in data["edges"]] == [False]


def test_every_drawing_shows_the_bounds() -> None:
    """text, Mermaid, DOT and html caption the autoscaled stage "1..8 workers (autoscaled)"."""
    graph = build_graph(_autoscaled())
    for render in (render_text, render_mermaid, render_dot, render_html):
        drawing = render(graph)
        assert drawing.count("1..8 workers (autoscaled)") == 1, render.__name__
        assert "2 workers" in drawing, render.__name__
