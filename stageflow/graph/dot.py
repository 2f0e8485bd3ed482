"""The ``dot``, ``svg`` and ``png`` formats: Graphviz source, and images rendered from it.

Node ids are generated (``s0``, ``s1``, ``input``, ``output``) so that no user text ever
reaches a DOT identifier; names only appear inside labels, escaped for the label syntax.
Images are made by Graphviz's ``dot`` program in a subprocess, so it must be on PATH.
"""

from __future__ import annotations

import shutil
import subprocess
from html import escape
from typing import Literal

from stageflow.errors import GraphvizError
from stageflow.graph.model import Edge, Graph, StageNode, visible

__all__ = ["MISMATCH_COLOR", "SLOWEST_COLOR", "GraphvizError", "render_dot", "render_image"]

MISMATCH_COLOR = "#c62828"
"""Colour of an edge whose models do not fit, in every rendered image."""

SLOWEST_COLOR = "#b26a00"
"""Colour of the slowest stage's outline when a run report is drawn."""

_FONT = "DejaVu Sans"
_IMAGE_TIMEOUT = 60.0


def render_dot(graph: Graph) -> str:
    """Return Graphviz DOT source for ``graph``, top to bottom in pipeline order."""
    graph_attrs = f"rankdir=TB, label={_quote('pipeline ' + graph.name)}, labelloc=t, ranksep=0.5"
    node_attrs = 'shape=box, style="rounded,filled", fillcolor="#eef3fb", color="#4a6fa5"'
    io_attrs = 'shape=oval, style=dashed, fillcolor=none, fontcolor="#555555"'
    lines = [
        "digraph pipeline {",
        f'  graph [{graph_attrs}, fontname="{_FONT}"];',
        f'  node [{node_attrs}, fontname="{_FONT}", fontsize=11, margin="0.15,0.08"];',
        f'  edge [fontname="{_FONT}", fontsize=10, color="#4a6fa5"];',
        f'  input [id="pipeline-input", label="input", {io_attrs}];',
        f'  output [id="pipeline-output", label="output", {io_attrs}];',
    ]
    lines += [
        f"  s{stage.index} [{_with_run(_node_attrs(stage), graph, stage.index)}];"
        for stage in graph.stages
    ]
    # Labels on straight vertical edges are padded with a space so they do not touch the line.
    lines.append(f"  input -> s0 [label={_quote(' ' + graph.input.name + ' ', *_run(graph, 0))}];")
    lines += [
        f"  s{edge.source} -> s{edge.target} [{_edge_attrs(edge, _run(graph, edge.target))}];"
        for edge in graph.edges
    ]
    last = len(graph.stages) - 1
    out = _quote(" " + graph.output.name + " ", *_run(graph, last + 1))
    lines.append(f"  s{last} -> output [label={out}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def render_image(graph: Graph, fmt: Literal["svg", "png"]) -> bytes:
    """Render ``graph`` to SVG or PNG bytes with Graphviz's ``dot`` program."""
    program = shutil.which("dot")
    if program is None:
        raise GraphvizError(
            f"the {fmt} format needs Graphviz's `dot` program, which was not found on PATH; "
            "install it with `apt-get install graphviz` (macOS: `brew install graphviz`) "
            "or use --format dot, mermaid or text"
        )
    # 144 dpi makes a PNG that stays sharp on high-density screens and in slides.
    options = ["-Gdpi=144"] if fmt == "png" else []
    try:
        done = subprocess.run(
            [program, f"-T{fmt}", *options],
            input=render_dot(graph).encode("utf-8"),
            capture_output=True,
            timeout=_IMAGE_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise GraphvizError(f"Graphviz's `dot` ({program}) could not render {fmt}: {exc}") from exc
    if done.returncode != 0:
        detail = done.stderr.decode("utf-8", "replace").strip().splitlines()
        reason = detail[0] if detail else f"exit status {done.returncode}"
        raise GraphvizError(f"Graphviz's `dot` ({program}) could not render {fmt}: {reason}")
    return done.stdout


def _node_attrs(stage: StageNode) -> str:
    workers = stage.workers_label
    rows = [
        f"<b>{_html(stage.name)}</b>",
        f'<font point-size="9">uses: {_html(stage.uses)}</font>',
        f'<font point-size="9">{workers} · {_html(stage.origin)}</font>',
        f'<font point-size="9">{_html(stage.input.name)} → {_html(stage.output.name)}</font>',
    ]
    if stage.fusion_label:
        rows.append(f'<font point-size="9">{_html(stage.fusion_label)}</font>')
    tooltip = f"{stage.name}: {stage.input.name} → {stage.output.name}"
    return (
        f'id="stage-{stage.index}", class="stage", label=<{"<br/>".join(rows)}>, '
        f"tooltip={_quote(tooltip)}"
    )


def _run(graph: Graph, target: int) -> list[str]:
    """The run's count for the edge into ``target``, when the graph carries a report."""
    return [graph.overlay.edge_label(target)] if graph.overlay is not None else []


def _with_run(attrs: str, graph: Graph, index: int) -> str:
    """Stage attributes with the run's numbers added as label rows, when there is a report."""
    if graph.overlay is None:
        return attrs
    figures = graph.overlay.stages[index]
    rows = [f'<font point-size="9">{_html(figures.summary)}</font>']
    if figures.slowest:
        rows.append(f'<font point-size="9" color="{SLOWEST_COLOR}"><b>◀ slowest</b></font>')
    if figures.dead_summary:
        rows.append(
            f'<font point-size="9" color="{MISMATCH_COLOR}">{_html(figures.dead_summary)}</font>'
        )
    attrs = attrs.replace(">, tooltip=", "<br/>" + "<br/>".join(rows) + ">, tooltip=", 1)
    if figures.slowest:
        attrs += f', penwidth=3, color="{SLOWEST_COLOR}"'
    return attrs


def _edge_attrs(edge: Edge, run: list[str] | None = None) -> str:
    attrs = [f'id="edge-{edge.source}-{edge.target}"']
    run = run or []
    if edge.ok:
        attrs.append(f"label={_quote(' ' + edge.label + ' ', *run)}")
        attrs.append(f"tooltip={_quote(edge.label)}")
    else:
        tooltip = "; ".join(problem.message for problem in edge.problems)
        attrs += [
            f"label={_quote(edge.label, *(problem.marker for problem in edge.problems), *run)}",
            f"tooltip={_quote(tooltip)}",
            f'class="mismatch", color="{MISMATCH_COLOR}", fontcolor="{MISMATCH_COLOR}"',
            "penwidth=2",
        ]
    if edge.fused:
        attrs.append('class="fused", style=bold' if edge.ok else "style=bold")
    return ", ".join(attrs)


def _quote(*lines: str) -> str:
    r"""Quote ``lines`` as one DOT string that a label shows literally, a line each.

    Inside a DOT string only ``\"`` is a parser escape, but the label renderer then reads
    backslash sequences (``\N``, ``\l``) and HTML entities (``&amp;``), so backslashes and
    ampersands are escaped too. Control characters inside a line are made visible, so the
    only line breaks are the ``\n`` placed between ``lines``.
    """
    escaped = (
        visible(line).replace("\\", "\\\\").replace('"', '\\"').replace("&", "&amp;")
        for line in lines
    )
    return '"' + "\\n".join(escaped) + '"'


def _html(text: str) -> str:
    """Escape ``text`` for a Graphviz HTML-like label."""
    return escape(visible(text), quote=False)
