"""The ``mermaid`` format: a flowchart that renders inside a GitHub Markdown code block.

Paste the output between a ```` ```mermaid ```` line and a ```` ``` ```` line. Node ids are
generated; every label is a quoted string whose special characters are Mermaid entity
codes (``#quot;``, ``#35;``), so no name can end a label or start a directive early.
"""

from __future__ import annotations

from stageflow.graph.dot import MISMATCH_COLOR, SLOWEST_COLOR
from stageflow.graph.model import Graph, StageNode, visible

__all__ = ["render_mermaid"]

# Mermaid reads `#...;` as an entity code, and inside a quoted label `<`, `>` and `&` may be
# taken as HTML, a backtick as a Markdown string, and `"` ends the label. Brackets, braces
# and pipes are node-shape and edge-label delimiters outside quotes; escaping them too
# means a renderer that trips on them inside quotes still shows the text. Parentheses are
# left alone: common in captions, and inert inside quotes. A backslash is escaped because
# Mermaid turns `\n` in a label into a line break.
_ENTITIES = {
    '"': "#quot;",
    "#": "#35;",
    "&": "#38;",
    ";": "#59;",
    "<": "#lt;",
    ">": "#gt;",
    "`": "#96;",
    "\\": "#92;",
    "|": "#124;",
    "[": "#91;",
    "]": "#93;",
    "{": "#123;",
    "}": "#125;",
}


def render_mermaid(graph: Graph) -> str:
    """Return a Mermaid flowchart for ``graph``, top to bottom in pipeline order."""
    lines = [
        # A comment, not a front-matter title: Mermaid sanitises titles as HTML, which would
        # mangle a name with markup characters, while a comment is never displayed. Its `%`
        # are escaped because Mermaid finds `%%{...}%%` directives anywhere in the text.
        f"%% pipeline {visible(graph.name).replace('%', '%25')}",
        "flowchart TB",
        '  input(["input"])',
        *(
            f'  s{stage.index}["{_node_label(stage)}{_run_rows(graph, stage.index)}"]'
            for stage in graph.stages
        ),
        '  output(["output"])',
        f'  input -->|"{_text(graph.input.name)}{_run_edge(graph, 0)}"| s0',
    ]
    for edge in graph.edges:
        label = "<br/>".join(
            [_text(edge.label), *(_text(problem.marker) for problem in edge.problems)]
        )
        run = _run_edge(graph, edge.target)
        lines.append(f'  s{edge.source} -->|"{label}{run}"| s{edge.target}')
    last = len(graph.stages)
    output = f"{_text(graph.output.name)}{_run_edge(graph, last)}"
    lines.append(f'  s{last - 1} -->|"{output}"| output')
    lines.append("  classDef io stroke-dasharray:4 3,fill:none")
    lines.append("  class input,output io")
    lines += _run_classes(graph)
    # linkStyle counts links in the order they were written: input→s0 is link 0.
    for number, edge in enumerate(graph.edges, start=1):
        if edge.fused:
            lines.append(f"  linkStyle {number} stroke-width:4px")
        if not edge.ok:
            lines.append(
                f"  linkStyle {number} stroke:{MISMATCH_COLOR},stroke-width:2px,"
                f"color:{MISMATCH_COLOR}"
            )
    return "\n".join(lines) + "\n"


def _run_rows(graph: Graph, index: int) -> str:
    """The run's numbers as extra label rows, when the graph carries a report."""
    if graph.overlay is None:
        return ""
    figures = graph.overlay.stages[index]
    rows = [_text(figures.summary)]
    if figures.slowest:
        rows.append("<b>◀ slowest</b>")
    if figures.dead_summary:
        rows.append(_text(figures.dead_summary))
    return "<br/>" + "<br/>".join(rows)


def _run_edge(graph: Graph, target: int) -> str:
    return f"<br/>{_text(graph.overlay.edge_label(target))}" if graph.overlay is not None else ""


def _run_classes(graph: Graph) -> list[str]:
    """Dead letters in red and the slowest stage outlined, as Mermaid classes."""
    if graph.overlay is None:
        return []
    dead = [f"s{i}" for i, figures in enumerate(graph.overlay.stages) if figures.dead_letters]
    slowest = [f"s{i}" for i, figures in enumerate(graph.overlay.stages) if figures.slowest]
    lines = []
    if dead:
        lines += [
            f"  classDef dead stroke:{MISMATCH_COLOR},color:{MISMATCH_COLOR}",
            f"  class {','.join(dead)} dead",
        ]
    if slowest:
        lines += [
            f"  classDef slowest stroke:{SLOWEST_COLOR},stroke-width:3px",
            f"  class {','.join(slowest)} slowest",
        ]
    return lines


def _node_label(stage: StageNode) -> str:
    workers = stage.workers_label
    rows = [
        f"<b>{_text(stage.name)}</b>",
        f"uses: {_text(stage.uses)}",
        f"{workers} · {_text(stage.origin)}",
        f"{_text(stage.input.name)} → {_text(stage.output.name)}",
    ]
    if stage.fusion_label:
        rows.append(_text(stage.fusion_label))
    return "<br/>".join(rows)


def _text(text: str) -> str:
    """Escape ``text`` for a quoted Mermaid label."""
    text = visible(text)
    out = []
    for index, char in enumerate(text):
        if char == ":" and text[index + 1 : index + 2] not in (" ", ""):
            # Mermaid pre-scans lines matching `style.*:\S*#.*;` and strips their `;`,
            # which would break the entity codes; no colon directly followed by text, no match.
            out.append("#58;")
        else:
            out.append(_ENTITIES.get(char, char))
    return "".join(out)
