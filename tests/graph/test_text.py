"""The text drawing: readable in an 80-column terminal whatever the names."""

from __future__ import annotations

from typing import Any

from pydantic import create_model

from stageflow import Pipeline, Stage
from stageflow.graph import build_graph
from stageflow.graph.text import WIDTH, _width, render_text
from tests.graph import cases
from tests.graph.stages import registry


def test_every_line_fits_80_columns(any_graph: Any) -> None:
    """No line of any test drawing is wider than 80 display columns."""
    for line in render_text(any_graph).splitlines():
        assert _width(line) <= WIDTH, line


def test_long_and_wide_names_wrap_inside_their_boxes() -> None:
    """A very long name and a CJK name wrap inside the box; box edges stay aligned."""
    model = create_model("データ" * 12, x=(int, ...))
    long_stage = type(
        "Long",
        (Stage,),
        {"name": "long", "Input": model, "Output": model, "process": lambda s, i: i},
    )
    name = "a-really-long-stage-name-" * 6
    graph = build_graph(Pipeline("p", [{"name": name, "uses": long_stage, "workers": 7}]))
    lines = render_text(graph).splitlines()
    boxed = [line for line in lines if line.startswith("│")]
    assert boxed and all(_width(line) == _width(boxed[0]) <= WIDTH for line in boxed)
    assert "7 workers" in render_text(graph)


def test_stage_box_shows_name_uses_workers_origin_and_models() -> None:
    """A box holds the stage's name, uses, worker count, distribution and Input → Output."""
    text = render_text(cases.wordcount())
    for expected in (
        "│ split ",
        "uses: split",
        "2 workers · stageflow-wordcount 1.2.3 (plugin wordcount)",
        "Document → Tokens",
        "    │ Tokens\n    ▼",
    ):
        assert expected in text


def test_mismatch_is_marked_on_the_arrow() -> None:
    """A mismatched edge carries the ✗ marker naming the missing field."""
    text = render_text(cases.mismatch())
    assert "    │ ✗ mismatch: missing 'words'\n    ▼" in text


def test_terminal_control_characters_are_not_printed() -> None:
    """An escape sequence in a stage name is shown escaped, never sent to the terminal."""
    graph = build_graph(
        Pipeline(
            "p", [{"name": "evil\x1b]0;title\x07\nname", "uses": "split"}], registry=registry()
        )
    )
    text = render_text(graph)
    assert "\x1b" not in text and "\x07" not in text
    assert "evil\\x1b]0;title\\x07\\nname" in text
