"""The ``text`` format: the pipeline drawn with UTF-8 box characters for a terminal.

Stages are boxes stacked top to bottom in pipeline order, joined by arrows labelled with
the model that flows between them. Everything fits in :data:`WIDTH` columns; long names
wrap inside their box rather than widening it.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterator

from stageflow.graph.model import Edge, Graph, StageNode, visible

__all__ = ["WIDTH", "render_text"]

WIDTH = 80
"""Columns the drawing fits in; a standard terminal."""

_ARROW_INDENT = "    "
_IO_INDENT = "  "  # puts the ○ of input/output two columns left of the arrow


def render_text(graph: Graph) -> str:
    """Draw ``graph`` as text no wider than :data:`WIDTH` columns."""
    count = len(graph.stages)
    header = f"pipeline '{visible(graph.name)}' · {count} stage{'s' if count != 1 else ''}"
    boxes = [_box_lines(stage) + _run_lines(graph, stage.index) for stage in graph.stages]
    inner = min(WIDTH - 4, max(_width(line) for box in boxes for line in box))
    lines = _wrap(header, WIDTH)
    if graph.source:
        lines += _wrap(f"file: {visible(graph.source)}", WIDTH, rest="  ")
    if graph.overlay is not None:
        lines += _wrap(visible(graph.overlay.caption), WIDTH, rest="  ")
    lines.append("")
    lines.append(f"{_IO_INDENT}○ input")
    lines += _arrow([visible(graph.input.name), *_run_edge(graph, 0)])
    for index, box in enumerate(boxes):
        lines += _frame(box, inner)
        if index < len(graph.edges):
            lines += _arrow(_edge_label(graph.edges[index]) + _run_edge(graph, index + 1))
    lines += _arrow([visible(graph.output.name), *_run_edge(graph, len(graph.stages))])
    lines.append(f"{_IO_INDENT}○ output")
    problems = graph.problems
    if problems:
        lines.append("")
        noun = "mismatch" if len(problems) == 1 else "mismatches"
        lines += _wrap(
            f"✗ {len(problems)} schema {noun} (drawn anyway; `stageflow validate` rejects "
            "this pipeline):",
            WIDTH,
        )
        for problem in problems:
            lines += _wrap(visible(problem.message), WIDTH, first="  - ", rest="    ")
    return "\n".join(lines) + "\n"


def _box_lines(stage: StageNode) -> list[str]:
    workers = stage.workers_label
    lines = [
        visible(stage.name),
        f"  uses: {visible(stage.uses)}",
        f"  {workers} · {visible(stage.origin)}",
        f"  {visible(stage.input.name)} → {visible(stage.output.name)}",
    ]
    if stage.fusion_label:
        lines.append(f"  {stage.fusion_label}")
    return lines


def _run_lines(graph: Graph, index: int) -> list[str]:
    """The run's numbers for a stage box, when the graph carries a report."""
    if graph.overlay is None:
        return []
    figures = graph.overlay.stages[index]
    lines = [f"  ▸ {figures.summary}" + ("  ◀ slowest" if figures.slowest else "")]
    if figures.dead_summary:
        lines.append(f"  {visible(figures.dead_summary)}")
    return lines


def _run_edge(graph: Graph, target: int) -> list[str]:
    return [graph.overlay.edge_label(target)] if graph.overlay is not None else []


def _edge_label(edge: Edge) -> list[str]:
    return [visible(edge.label)] + [visible(problem.marker) for problem in edge.problems]


def _frame(content: list[str], inner: int) -> list[str]:
    body = [part for line in content for part in _wrap(line, inner, rest="    ")]
    lines = ["┌" + "─" * (inner + 2) + "┐"]
    lines += [f"│ {part}{' ' * (inner - _width(part))} │" for part in body]
    lines.append("└" + "─" * (inner + 2) + "┘")
    return lines


def _arrow(labels: list[str]) -> list[str]:
    room = WIDTH - len(_ARROW_INDENT) - 2
    lines = [
        f"{_ARROW_INDENT}│ {part}" for label in labels for part in _wrap(label, room, rest="  ")
    ]
    return [*lines, f"{_ARROW_INDENT}▼"]


def _wrap(text: str, width: int, *, first: str = "", rest: str = "") -> list[str]:
    """Wrap ``text`` to ``width`` display columns, breaking words only when they must.

    textwrap counts characters, not columns, so a CJK or emoji name would overflow a box.
    """
    lines: list[str] = []
    line = first
    for word in _words(text):
        candidate = line + word
        if _width(candidate.rstrip()) <= width or not line.strip():
            line = candidate
        else:
            lines.append(line.rstrip())
            line = rest + word.lstrip()
        while _width(line.rstrip()) > width:
            head, line = _split_at(line, width)
            lines.append(head)
            line = rest + line
    lines.append(line.rstrip())
    return lines


def _words(text: str) -> Iterator[str]:
    """Yield the words of ``text``, each with the spaces before it."""
    word = ""
    for char in text:
        if char == " " and word.strip():
            yield word
            word = ""
        word += char
    if word:
        yield word


def _split_at(text: str, width: int) -> tuple[str, str]:
    used = 0
    for index, char in enumerate(text):
        used += _char_width(char)
        if used > width:
            return text[:index], text[index:]
    return text, ""


def _width(text: str) -> int:
    return sum(_char_width(char) for char in text)


def _char_width(char: str) -> int:
    if unicodedata.combining(char):
        return 0
    return 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1
