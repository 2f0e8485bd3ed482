"""Graphviz output: DOT that dot parses, SVG that is XML, PNG that is a PNG."""

from __future__ import annotations

import struct
import subprocess
import xml.etree.ElementTree as ET
from typing import Any

import pytest

from stageflow.graph import GraphvizError
from stageflow.graph.dot import MISMATCH_COLOR, render_dot, render_image
from stageflow.graph.model import visible
from tests.graph import cases, stages

SVG = "{http://www.w3.org/2000/svg}"


def test_dot_parses_with_graphviz(any_graph: Any, dot_program: str) -> None:
    """`dot -Tsvg` accepts the DOT source of every test graph, hostile names included."""
    done = subprocess.run(
        [dot_program, "-Tsvg"],
        input=render_dot(any_graph).encode("utf-8"),
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()


def test_dot_has_input_output_and_labelled_edges() -> None:
    """Stages are nodes; edges from input, between stages and to output carry model names."""
    dot = render_dot(cases.wordcount())
    assert 'input -> s0 [label=" Document "]' in dot
    assert 's0 -> s1 [id="edge-0-1", label=" Tokens "' in dot
    assert 's1 -> output [label=" Counts "]' in dot


def test_dot_marks_mismatch_in_red_with_the_field() -> None:
    """A mismatched edge is red and its label names the missing field."""
    dot = render_dot(cases.mismatch())
    (edge,) = [line for line in dot.splitlines() if line.startswith("  s0 -> s1")]
    assert "✗ mismatch: missing 'words'" in edge
    assert f'color="{MISMATCH_COLOR}"' in edge


def test_svg_is_well_formed_and_shows_names_literally(dot_program: str) -> None:
    """The SVG parses as XML and its text shows hostile names exactly as written."""
    svg = render_image(cases.hostile(), "svg")
    root = ET.fromstring(svg)
    texts = ["".join(t.itertext()) for t in root.iter(f"{SVG}text")]
    assert visible(stages.HOSTILE) in texts
    assert "✗ mismatch: missing 'value'" in texts


def test_svg_mismatch_edge_is_red(dot_program: str) -> None:
    """In the SVG the mismatched edge's path is drawn in the mismatch colour."""
    root = ET.fromstring(render_image(cases.mismatch(), "svg"))
    (edge,) = [g for g in root.iter(f"{SVG}g") if g.get("id") == "edge-0-1"]
    paths = list(edge.iter(f"{SVG}path"))
    assert paths and all(p.get("stroke") == MISMATCH_COLOR for p in paths)


def test_png_has_signature_and_ihdr(dot_program: str) -> None:
    """The PNG starts with the PNG signature and an IHDR chunk of plausible size."""
    png = render_image(cases.wordcount(), "png")
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    length, kind, width, height = struct.unpack(">I4sII", png[8:24])
    assert (length, kind) == (13, b"IHDR")
    assert 100 < width < 5000 and 100 < height < 5000


def test_missing_dot_raises_one_clear_sentence(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without `dot` on PATH, image formats raise GraphvizError naming the package."""
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(GraphvizError, match=r"needs Graphviz's `dot` program.*apt-get install"):
        render_image(cases.wordcount(), "png")
