"""`stageflow graph --report`: the run's numbers in every format, and wrong reports refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stageflow.graph.dot import MISMATCH_COLOR, render_dot, render_image
from stageflow.graph.html import render_html
from stageflow.graph.json import graph_to_dict
from stageflow.graph.mermaid import render_mermaid
from stageflow.graph.text import render_text
from tests.graph import cases
from tests.graph.conftest import run_cli

NUMBERS = ("1,200 records", "1,190 records", "1,187 results", "busy 75%", "busy 25%", "300 rec/s")


def test_text_and_mermaid_carry_the_numbers() -> None:
    """Text and Mermaid show edge counts, rates, busy shares, dead letters and the slowest."""
    graph = cases.wordcount_report()
    for drawing in (render_text(graph), render_mermaid(graph)):
        for number in NUMBERS:
            assert number in drawing, number
        assert "◀ slowest" in drawing and "✗ 10 dead letters (ValidationError 10)" in drawing
    mermaid = render_mermaid(graph)
    assert f"classDef dead stroke:{MISMATCH_COLOR}" in mermaid and "class s0,s1 dead" in mermaid
    assert "class s0 slowest" in mermaid


def test_dot_and_svg_carry_the_numbers_dead_letters_in_red(dot_program: str) -> None:
    """DOT labels hold the numbers with dead letters in red; the SVG Graphviz makes shows them."""
    graph = cases.wordcount_report()
    dot = render_dot(graph)
    assert f'<font point-size="9" color="{MISMATCH_COLOR}">✗ 3 dead letters' in dot
    svg = render_image(graph, "svg").decode()
    for drawing in (dot, svg):
        for number in NUMBERS:
            assert number in drawing, number
    assert f'fill="{MISMATCH_COLOR}"' in svg and "◀ slowest" in svg


@pytest.mark.parametrize("use_graphviz", [True, False], ids=["graphviz", "fallback"])
def test_html_carries_the_numbers_and_the_report(
    use_graphviz: bool, request: pytest.FixtureRequest
) -> None:
    """The page draws the numbers and embeds the whole report for the click panel."""
    if use_graphviz:
        request.getfixturevalue("dot_program")
    page = render_html(cases.wordcount_report(), use_graphviz=use_graphviz)
    for number in NUMBERS:
        assert number in page, number
    assert 'id="detail-run"' in page
    data = graph_to_dict(cases.wordcount_report())
    assert data["run"]["format"] == "stageflow-run-report/1"
    assert data["run"]["stages"][0]["dead_letters"] == {"ValidationError": 10}
    assert "run" not in graph_to_dict(cases.wordcount())  # no report, no key


def test_cli_draws_a_real_report_and_refuses_a_foreign_one(tmp_path: Path) -> None:
    """A report of this pipeline is drawn; one of other stages, or not a report, exits 2."""
    report = tmp_path / "r.json"
    report.write_text(json.dumps(graph_to_dict(cases.wordcount_report())["run"]))
    pipeline = str(cases.PIPELINES / "mismatch.yaml")
    done = run_cli("graph", pipeline, "--report", str(report))
    assert done.returncode == 2
    assert b"the report is of stages split, count" in done.stderr
    assert b"but the pipeline draws split, tally" in done.stderr
    (tmp_path / "bad.json").write_text("{}")
    bad = run_cli("graph", pipeline, "--report", str(tmp_path / "bad.json"))
    assert bad.returncode == 2 and b"is not a stageflow-run-report/1 file" in bad.stderr
