"""The Mermaid flowchart: structurally valid lines and fully escaped labels."""

from __future__ import annotations

import html
import re
from typing import Any

from stageflow.graph.mermaid import render_mermaid
from stageflow.graph.model import visible
from tests.graph import cases, stages

NODE = re.compile(r'^  (s\d+)\["([^"]*)"\]$')
EDGE = re.compile(r'^  (input|s\d+) -->\|"([^"]*)"\| (s\d+|output)$')
OTHER = re.compile(
    r'^(%% pipeline [^\n]*|flowchart TB|  (input|output)\(\["(input|output)"\]\)'
    r"|  classDef io .*|  class input,output io|  linkStyle \d+ [^;]*"
    r"|  classDef (dead|slowest) [^;]*|  class s\d+(,s\d+)* (dead|slowest))$"
)


def decode(label: str) -> str:
    """Undo Mermaid entity codes the way Mermaid does (#name; and #123; to HTML entities)."""
    return html.unescape(
        re.sub(r"#(\w+);", lambda m: f"&{'#' if m[1].isdigit() else ''}{m[1]};", label)
    )


def test_every_line_is_a_known_statement(any_graph: Any) -> None:
    """Each line is a quoted node, a quoted edge label or a fixed statement: no label leaks."""
    for line in render_mermaid(any_graph).splitlines():
        assert NODE.match(line) or EDGE.match(line) or OTHER.match(line), line


def test_hostile_names_are_entity_escaped() -> None:
    """Quotes, #, ;, <>, &, brackets and backticks become entity codes that decode back."""
    text = render_mermaid(cases.hostile())
    (node,) = [m for m in map(NODE.match, text.splitlines()) if m and m[1] == "s1"]
    label = node[2]
    assert "#quot;" in label and "#35;" in label and "#59;" in label and "#92;" in label
    for raw in '"<>`[]{}|\\':
        assert raw not in label.replace("<b>", "").replace("</b>", "").replace("<br/>", "")
    assert re.search(r"#(?!\w+;)", label) is None, "a bare # would start an entity code"
    assert "%%{" not in text, "Mermaid would read an init directive"
    first_row = decode(label.split("<br/>")[0].removeprefix("<b>").removesuffix("</b>"))
    assert first_row == visible(stages.HOSTILE)


def test_mismatch_edge_is_marked_and_styled_red() -> None:
    """The mismatched link shows the ✗ marker and gets a red linkStyle by its index."""
    text = render_mermaid(cases.mismatch())
    assert "  s0 -->|\"Tokens as Words<br/>✗ mismatch: missing 'words'\"| s1" in text
    assert "  linkStyle 1 stroke:#c62828" in text
