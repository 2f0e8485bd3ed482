"""One entry point from a format name to the bytes or text of that drawing."""

from __future__ import annotations

from typing import Literal, get_args

from stageflow.graph.dot import render_dot, render_image
from stageflow.graph.html import render_html
from stageflow.graph.json import render_json
from stageflow.graph.mermaid import render_mermaid
from stageflow.graph.model import Graph
from stageflow.graph.text import render_text

__all__ = ["BINARY_FORMATS", "FORMATS", "Format", "render"]

Format = Literal["text", "dot", "mermaid", "svg", "png", "html", "json"]
FORMATS: tuple[Format, ...] = get_args(Format)
BINARY_FORMATS: frozenset[Format] = frozenset({"png"})


def render(graph: Graph, fmt: Format) -> str | bytes:
    """Draw ``graph`` in ``fmt``: text for every format but ``png``, which is bytes.

    ``svg`` and ``png`` raise :class:`~stageflow.graph.dot.GraphvizError` when Graphviz's
    ``dot`` program is not on PATH; ``html`` falls back to its own drawing instead.
    """
    if fmt == "text":
        return render_text(graph)
    if fmt == "dot":
        return render_dot(graph)
    if fmt == "mermaid":
        return render_mermaid(graph)
    if fmt == "svg":
        return render_image(graph, "svg").decode("utf-8")
    if fmt == "png":
        return render_image(graph, "png")
    if fmt == "html":
        return render_html(graph)
    if fmt == "json":
        return render_json(graph)
    raise ValueError(f"unknown graph format {fmt!r}; use one of {', '.join(FORMATS)}")
