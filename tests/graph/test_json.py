"""The json format: the versioned graph model other tools read."""

from __future__ import annotations

import json

from stageflow.graph import FORMAT_VERSION
from stageflow.graph.json import render_json
from tests.graph import cases, stages


def test_top_level_shape_is_versioned() -> None:
    """The document names its format version and has the documented top-level keys."""
    data = json.loads(render_json(cases.wordcount()))
    assert data["format"] == FORMAT_VERSION == "stageflow-graph/1"
    assert set(data) == {"format", "pipeline", "input", "output", "stages", "edges", "models"}
    assert data["pipeline"] == {"name": "wordcount", "source": "examples/wordcount.yaml"}


def test_stages_edges_and_schemas_resolve() -> None:
    """Every model id a stage or edge names is in `models`, with the model's JSON Schema."""
    data = json.loads(render_json(cases.wordcount()))
    split = data["stages"][0]
    assert split["workers"] == 2 and split["distribution"] == "stageflow-wordcount"
    assert split["config"] == {"lowercase": False}
    assert data["models"][split["input"]]["schema"] == stages.Document.model_json_schema()
    assert data["models"][split["config_model"]]["schema"] == stages.SplitConfig.model_json_schema()
    (edge,) = data["edges"]
    assert (edge["from"], edge["to"], edge["ok"], edge["mismatches"]) == (0, 1, True, [])
    assert data["models"][edge["model"]]["name"] == "Tokens"


def test_mismatch_is_listed_on_its_edge() -> None:
    """A mismatch appears on its edge with field, kind and the full message."""
    (edge,) = json.loads(render_json(cases.mismatch()))["edges"]
    assert edge["ok"] is False
    (problem,) = edge["mismatches"]
    assert (problem["field"], problem["kind"], problem["provided"]) == ("words", "missing", None)
    assert problem["needed"] == "list[str]"
    assert "words" in problem["message"]


def test_names_round_trip_unescaped() -> None:
    """JSON keeps hostile names exactly; escaping belongs to the drawing formats."""
    data = json.loads(render_json(cases.hostile()))
    assert data["pipeline"]["name"] == stages.HOSTILE
    assert data["stages"][1]["name"] == stages.HOSTILE
