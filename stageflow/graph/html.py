"""The ``html`` format: one self-contained page that draws the graph and shows schemas.

The page needs no network: CSS, script, the drawing and the data are all inline, and a
Content-Security-Policy forbids fetching anything. The drawing is Graphviz's SVG when the
``dot`` program is on PATH, otherwise a plain HTML/CSS drawing of the same chain, so the
format works everywhere. Clicking a stage (or Enter on a focused one) shows its Input,
Output and Config JSON Schemas, read from the embedded ``stageflow-graph/1`` data.
"""

from __future__ import annotations

import json
import shutil
from html import escape

from stageflow.graph.dot import MISMATCH_COLOR, render_image
from stageflow.graph.json import graph_to_dict
from stageflow.graph.model import FUSED_MARKER, Graph, visible

__all__ = ["render_html"]


def render_html(graph: Graph, *, use_graphviz: bool | None = None) -> str:
    """Return the page for ``graph``.

    ``use_graphviz`` None draws with Graphviz when ``dot`` is on PATH; True requires it
    (raising :class:`~stageflow.graph.dot.GraphvizError` without it); False never uses it.
    """
    if use_graphviz is None:
        use_graphviz = shutil.which("dot") is not None
    if use_graphviz:
        drawing = _inline_svg(render_image(graph, "svg").decode("utf-8"))
        note = ""
    else:
        drawing = _html_drawing(graph)
        note = (
            '<p class="note">Drawn without Graphviz (its <code>dot</code> program was not '
            "found); install Graphviz for the full drawing.</p>"
        )
    return _PAGE.format(
        run=_run_panel(graph),
        title=_esc(f"pipeline {graph.name}"),
        css=_CSS.replace("MISMATCH", MISMATCH_COLOR),
        heading=_esc(graph.name),
        summary=_esc(_summary(graph)),
        note=note,
        drawing=drawing,
        data=_script_json(graph),
        script=_SCRIPT,
    )


def _summary(graph: Graph) -> str:
    count = len(graph.stages)
    parts = [f"{count} stage{'s' if count != 1 else ''}"]
    if graph.source:
        parts.append(graph.source)
    problems = len(graph.problems)
    if problems:
        parts.append(f"✗ {problems} schema mismatch{'es' if problems != 1 else ''}")
    if graph.overlay is not None:
        parts.append(graph.overlay.caption)
    parts.append("click a stage to see its schemas")
    return " · ".join(parts)


def _run_panel(graph: Graph) -> str:
    """The details panel's place for the clicked stage's numbers, with a report only."""
    if graph.overlay is None:
        return ""
    return '<h3>This run</h3>\n<dl id="detail-run"></dl>'


def _run_spans(graph: Graph, index: int) -> str:
    if graph.overlay is None:
        return ""
    figures = graph.overlay.stages[index]
    spans = f'<span class="run">{_esc(figures.summary)}</span>'
    if figures.slowest:
        spans += '<span class="run slowest">◀ slowest</span>'
    if figures.dead_summary:
        spans += f'<span class="run dead">{_esc(figures.dead_summary)}</span>'
    return spans


def _inline_svg(svg: str) -> str:
    """Drop the XML prolog and DOCTYPE Graphviz writes; inline SVG in HTML starts at <svg."""
    return svg[svg.index("<svg") :]


def _html_drawing(graph: Graph) -> str:
    parts = ['<div class="flow">', '<div class="io">input</div>']
    parts.append(_arrow(graph.input.name, [], _run_count(graph, 0)))
    for stage in graph.stages:
        workers = stage.workers_label
        parts.append(
            f'<div class="stage box" data-stage-index="{stage.index}">'
            f"<strong>{_esc(stage.name)}</strong>"
            f"<span>uses: {_esc(stage.uses)}</span>"
            f"<span>{workers} · {_esc(stage.origin)}</span>"
            f"<span>{_esc(stage.input.name)} → {_esc(stage.output.name)}</span>"
            + (f"<span>{_esc(stage.fusion_label)}</span>" if stage.fusion_label else "")
            + f"{_run_spans(graph, stage.index)}</div>"
        )
        if stage.index < len(graph.edges):
            edge = graph.edges[stage.index]
            markers = [problem.marker for problem in edge.problems]
            count = _run_count(graph, stage.index + 1)
            parts.append(_arrow(edge.label, markers, count, edge.fused))
    parts.append(_arrow(graph.output.name, [], _run_count(graph, len(graph.stages))))
    parts.append('<div class="io">output</div></div>')
    return "\n".join(parts)


def _run_count(graph: Graph, target: int) -> str | None:
    return graph.overlay.edge_label(target) if graph.overlay is not None else None


def _arrow(label: str, markers: list[str], count: str | None = None, fused: bool = False) -> str:
    css = "arrow mismatch" if markers else "arrow"
    spans = f'<span class="fused">{_esc(FUSED_MARKER)}</span>' if fused else ""
    spans += "".join(f'<span class="marker">{_esc(marker)}</span>' for marker in markers)
    if count is not None:
        spans += f'<span class="run">{_esc(count)}</span>'
    return f'<div class="{css}"><div class="labels"><span>{_esc(label)}</span>{spans}</div></div>'


def _esc(text: str) -> str:
    return escape(visible(text), quote=True)


def _script_json(graph: Graph) -> str:
    # Inside <script> the HTML parser ends the element at any "</script"; escaping <, > and
    # & as JSON \u escapes keeps every name inert while JSON.parse reads it back unchanged.
    text = json.dumps(graph_to_dict(graph), ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


_CSS = """
:root { color-scheme: light; font-family: "DejaVu Sans", system-ui, sans-serif; }
body { margin: 0; color: #1d2733; background: #fafbfc; }
header { padding: 12px 20px; border-bottom: 1px solid #d8dee6; background: #fff; }
h1 { margin: 0; font-size: 1.2rem; }
.summary, .note { margin: 4px 0 0; color: #555; font-size: .9rem; }
main { display: flex; gap: 16px; padding: 16px 20px; align-items: flex-start; }
#graph { flex: 1 1 50%; overflow: auto; background: #fff; border: 1px solid #d8dee6;
  border-radius: 6px; padding: 8px; }
#graph svg { max-width: 100%; height: auto; }
#details { flex: 1 1 50%; min-width: 0; }
#details h2 { margin: 0 0 4px; font-size: 1.1rem; overflow-wrap: anywhere; }
#details h3 { margin: 12px 0 4px; font-size: .95rem; }
#details dl { display: grid; grid-template-columns: max-content 1fr; gap: 2px 12px;
  margin: 0; font-size: .9rem; }
#details dd { margin: 0; overflow-wrap: anywhere; }
pre { margin: 0; padding: 8px; background: #fff; border: 1px solid #d8dee6; border-radius: 4px;
  font-size: .8rem; overflow: auto; max-height: 40vh; }
.problems { color: MISMATCH; white-space: pre-wrap; }
pre:empty { display: none; }
.stage { cursor: pointer; }
.stage:focus { outline: 2px solid #4a6fa5; outline-offset: 2px; }
g.stage.selected path, g.stage.selected polygon { stroke-width: 3px; fill: #d5e3f7; }
.flow { display: flex; flex-direction: column; align-items: center; }
.box { display: flex; flex-direction: column; gap: 2px; padding: 8px 14px; min-width: 14em;
  border: 1px solid #4a6fa5; border-radius: 8px; background: #eef3fb; font-size: .85rem;
  text-align: center; overflow-wrap: anywhere; }
.box.selected { border-width: 3px; background: #d5e3f7; }
.io { padding: 2px 14px; border: 1px dashed #888; border-radius: 999px; color: #555; }
.arrow { width: 0; padding: 4px 0 14px; margin: 2px 0; border-left: 2px solid #4a6fa5;
  font-size: .8rem; position: relative; }
.arrow .labels { display: flex; flex-direction: column; width: max-content; padding-left: 8px; }
.arrow::after { content: "▼"; position: absolute; bottom: -6px; left: -7px; color: #4a6fa5; }
.arrow.mismatch { border-left-color: MISMATCH; color: MISMATCH; }
.arrow.mismatch::after { color: MISMATCH; }
.run { color: #33475b; } .run.dead, #detail-run .dead { color: MISMATCH; }
.run.slowest { color: #b26a00; font-weight: bold; }
"""

_SCRIPT = """
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("stageflow-graph-data").textContent);

  function text(id, value) { document.getElementById(id).textContent = value; }

  function schemaText(id) {
    if (id === null) { return "(this stage takes no configuration)"; }
    var model = data.models[id];
    if (model.schema === null) { return "(no JSON Schema: " + model.schema_error + ")"; }
    return JSON.stringify(model.schema, null, 2);
  }

  function showRun(index) {
    var panel = document.getElementById("detail-run");
    if (!panel || !data.run) { return; }
    var stage = data.run.stages[index];
    var dead = Object.keys(stage.dead_letters).map(function (error) {
      return error + " " + stage.dead_letters[error];
    });
    var seconds = function (value) {
      return value === null ? "n/a" : (value * 1000).toFixed(3) + " ms";
    };
    var rows = [
      ["records in", stage.records_in.toLocaleString("en")],
      ["records out", stage.records_out.toLocaleString("en")],
      ["records/s", Math.round(stage.records_per_second).toLocaleString("en")],
      ["busy", stage.busy_seconds.toFixed(3) + " s (" + Math.round(stage.busy_share * 100)
        + "% of all stages)" + (stage.slowest ? ", the slowest stage" : "")],
      ["per record", "mean " + seconds(stage.mean_seconds) + ", p99 " + seconds(stage.p99_seconds)],
      ["restarts", String(stage.restarts)],
      ["dead letters", dead.length ? dead.join(", ") : "none"]
    ];
    panel.textContent = "";
    rows.forEach(function (row) {
      var term = document.createElement("dt");
      var value = document.createElement("dd");
      term.textContent = row[0];
      value.textContent = row[1];
      if (row[0] === "dead letters" && dead.length) { value.className = "dead"; }
      panel.appendChild(term);
      panel.appendChild(value);
    });
  }

  function modelName(id) { return id === null ? "none" : data.models[id].name; }

  function show(index) {
    var stage = data.stages[index];
    text("detail-name", stage.name);
    text("detail-uses", stage.uses);
    text("detail-reference", stage.reference);
    text("detail-workers", stage.autoscale === null ? String(stage.workers)
      : stage.autoscale.min + ".." + stage.autoscale.max + " (autoscaled, "
        + stage.workers + " at the start)");
    var dist = [stage.distribution, stage.version].filter(Boolean).join(" ");
    var plugin = stage.plugin ? "plugin " + stage.plugin : "";
    text("detail-origin", dist ? (plugin ? dist + " (" + plugin + ")" : dist)
      : (plugin || "local class"));
    text("detail-config", stage.config === null ? "none" : JSON.stringify(stage.config));
    text("input-name", modelName(stage.input));
    text("output-name", modelName(stage.output));
    text("config-name", modelName(stage.config_model));
    text("schema-input", schemaText(stage.input));
    text("schema-output", schemaText(stage.output));
    text("schema-config", schemaText(stage.config_model));
    var problems = [];
    data.edges.forEach(function (edge) {
      if (edge.from === index || edge.to === index) {
        edge.mismatches.forEach(function (m) { problems.push("✗ " + m.message); });
      }
    });
    text("detail-problems", problems.join("\\n"));
    showRun(index);
    document.querySelectorAll(".stage.selected").forEach(function (el) {
      el.classList.remove("selected");
    });
    document.querySelectorAll('[data-stage-index="' + index + '"]').forEach(function (el) {
      el.classList.add("selected");
    });
    var panel = document.getElementById("details");
    panel.hidden = false;
    panel.setAttribute("data-stage", String(index));
  }

  // Graphviz writes each stage as <g id="stage-N" class="node stage">.
  document.querySelectorAll('g.stage[id^="stage-"]').forEach(function (el) {
    el.setAttribute("data-stage-index", el.id.slice("stage-".length));
  });
  document.querySelectorAll("[data-stage-index]").forEach(function (el) {
    var index = Number(el.getAttribute("data-stage-index"));
    el.setAttribute("tabindex", "0");
    el.setAttribute("role", "button");
    el.setAttribute("aria-label", "stage " + data.stages[index].name + ": show schemas");
    el.addEventListener("click", function () { show(index); });
    el.addEventListener("keydown", function (event) {
      if (event.key === "Enter" || event.key === " ") { event.preventDefault(); show(index); }
    });
  });
})();
"""

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; \
style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="stageflow graph">
<title>{title}</title>
<style>{css}</style>
</head>
<body>
<header>
<h1>{heading}</h1>
<p class="summary">{summary}</p>
{note}
</header>
<main>
<div id="graph">
{drawing}
</div>
<section id="details" hidden aria-live="polite">
<h2 id="detail-name"></h2>
<dl>
<dt>uses</dt><dd id="detail-uses"></dd>
<dt>class</dt><dd id="detail-reference"></dd>
<dt>workers</dt><dd id="detail-workers"></dd>
<dt>from</dt><dd id="detail-origin"></dd>
<dt>config</dt><dd id="detail-config"></dd>
</dl>
<pre id="detail-problems" class="problems"></pre>
{run}
<h3>Input: <span id="input-name"></span></h3>
<pre id="schema-input"></pre>
<h3>Output: <span id="output-name"></span></h3>
<pre id="schema-output"></pre>
<h3>Config: <span id="config-name"></span></h3>
<pre id="schema-config"></pre>
</section>
</main>
<script type="application/json" id="stageflow-graph-data">{data}</script>
<script>{script}</script>
</body>
</html>
"""
