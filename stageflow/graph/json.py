"""The ``json`` format: the graph model for other tools, under a versioned format key.

Shape of ``stageflow-graph/1`` (keys are only ever added within one version)::

    {
      "format": "stageflow-graph/1",
      "pipeline": {"name": str, "source": str | null},
      "input": model id,            # the first stage's Input
      "output": model id,           # the last stage's Output
      "stages": [{
          "index": int, "name": str, "uses": str, "reference": "module:QualName",
          "workers": int, "plugin": str | null, "distribution": str | null,
          "version": str | null, "input": model id, "output": model id,
          "config_model": model id | null, "config": object | null,
          "fused_group": int | null,  # 1, 2, ...: stages sharing worker processes
          "autoscale": {"min": int, "max": int} | null  # workers: {min, max}; "workers"
                                                         # is then the count at the start
      }],
      "edges": [{
          "from": stage index, "to": stage index,
          "model": model id,        # what the upstream stage outputs
          "expects": model id,      # what the downstream stage reads it as
          "ok": bool,
          "fused": bool,            # both stages run in one process (no hop)
          "mismatches": [{"field": dotted path, "kind": "missing" | "incompatible",
                          "needed": type name, "provided": type name | null,
                          "message": str}]
      }],
      "models": {model id: {"name": str, "schema": JSON Schema | null,
                            "schema_error": str | null}},
      "run": stageflow-run-report/1 document   # only with `stageflow graph --report`
    }

A model id is ``module:QualName`` (with ``#2``, ``#3`` appended if two models share one).
"""

from __future__ import annotations

import json
from typing import Any

from stageflow.graph.model import Graph

__all__ = ["FORMAT_VERSION", "graph_to_dict", "render_json"]

FORMAT_VERSION = "stageflow-graph/1"
"""Value of the top-level ``format`` key; bumped when a key changes meaning or goes away."""


def graph_to_dict(graph: Graph) -> dict[str, Any]:
    """Return ``graph`` as plain JSON-ready data in the ``stageflow-graph/1`` shape."""
    return {
        "format": FORMAT_VERSION,
        "pipeline": {"name": graph.name, "source": graph.source},
        "input": graph.input.id,
        "output": graph.output.id,
        "stages": [
            {
                "index": stage.index,
                "name": stage.name,
                "uses": stage.uses,
                "reference": stage.reference,
                "workers": stage.workers,
                "plugin": stage.plugin,
                "distribution": stage.distribution,
                "version": stage.version,
                "input": stage.input.id,
                "output": stage.output.id,
                "config_model": stage.config.id if stage.config is not None else None,
                "config": stage.config_values,
                "fused_group": stage.fused_group,
                "autoscale": (
                    {"min": stage.bounds[0], "max": stage.bounds[1]}
                    if stage.bounds is not None
                    else None
                ),
            }
            for stage in graph.stages
        ],
        "edges": [
            {
                "from": edge.source,
                "to": edge.target,
                "model": edge.model.id,
                "expects": edge.expects.id,
                "ok": edge.ok,
                "fused": edge.fused,
                "mismatches": [
                    {
                        "field": p.field,
                        "kind": p.kind,
                        "needed": p.needed,
                        "provided": p.provided,
                        "message": p.message,
                    }
                    for p in edge.problems
                ],
            }
            for edge in graph.edges
        ],
        "models": {
            ref.id: {"name": ref.name, "schema": ref.schema, "schema_error": ref.schema_error}
            for ref in graph.models().values()
        },
    } | _run(graph)


def _run(graph: Graph) -> dict[str, Any]:
    """``{"run": report}`` when a run report is drawn on the graph (key added in version 1)."""
    if graph.overlay is None:
        return {}
    return {"run": graph.overlay.document.model_dump(mode="json")}


def render_json(graph: Graph) -> str:
    """Return ``graph`` as indented ``stageflow-graph/1`` JSON text."""
    return json.dumps(graph_to_dict(graph), indent=2, ensure_ascii=False) + "\n"
