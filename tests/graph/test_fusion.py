"""Every graph format shows which stages run fused in one worker process, and which do not."""

from __future__ import annotations

import json

from stageflow import Pipeline
from stageflow.graph import build_graph
from stageflow.graph.dot import render_dot
from stageflow.graph.html import render_html
from stageflow.graph.json import render_json
from stageflow.graph.mermaid import render_mermaid
from stageflow.graph.model import FUSED_MARKER
from stageflow.graph.text import render_text
from tests.graph import stages


def _three(**third: object) -> Pipeline:
    return Pipeline(
        "three",
        [
            {"name": "split", "uses": "split", "workers": 2},
            {"name": "count", "uses": "count"},
            {"name": "again", "uses": "count", **third},
        ],
        registry=stages.registry(),
        check_schemas=False,
    )


def test_json_carries_fused_groups_and_edges() -> None:
    """Fused stages share a group number and their edge says fused; a boundary does not."""
    data = json.loads(render_json(build_graph(_three(fuse=False))))
    assert [s["fused_group"] for s in data["stages"]] == [1, 1, None]
    assert [e["fused"] for e in data["edges"]] == [True, False]


def test_every_drawing_marks_the_fused_stages_only() -> None:
    """text, Mermaid, DOT and html caption the two fused stages, not the one on its own."""
    graph = build_graph(_three(fuse=False))
    html = render_html(graph, use_graphviz=False)
    for drawing in (render_text(graph), render_mermaid(graph), render_dot(graph), html):
        assert drawing.count("fused group 1 · 3 processes") == 2
    assert html.count(FUSED_MARKER) == 1
    assert render_dot(graph).count('class="fused", style=bold') == 1
    assert render_mermaid(graph).count("linkStyle 1 stroke-width:4px") == 1
    alone = Pipeline("one", [{"name": "s", "uses": "split"}], registry=stages.registry())
    assert "fused" not in render_text(build_graph(alone))
