"""Listings for tools: `stageflow plugins --json` and the editor schema of `stageflow schema`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from pydantic import BaseModel, ConfigDict

import stageflow
from stageflow.plugins import StageEntry, StageRegistry, load_registry
from stageflow.schema import editor_schema
from tests.helpers import REPO, run_stageflow

MODEL = {
    "type": "object",
    "required": ["name", "schema", "schema_error"],
    "properties": {
        "name": {"type": "string"},
        "schema": {"type": ["object", "null"]},
        "schema_error": {"type": ["string", "null"]},
    },
}

#: The stageflow-plugins/1 shape the README and stageflow/cli/plugins.py document.
PLUGINS_SHAPE = {
    "type": "object",
    "required": ["format", "plugins", "problems"],
    "properties": {
        "format": {"const": "stageflow-plugins/1"},
        "plugins": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name", "distribution", "version", "stages"],
                "properties": {
                    "name": {"type": "string"},
                    "distribution": {"type": ["string", "null"]},
                    "version": {"type": ["string", "null"]},
                    "stages": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["name", "class", "input", "output", "config"],
                            "properties": {
                                "name": {"type": "string"},
                                "class": {"type": "string", "pattern": "^[\\w.]+:[\\w.]+$"},
                                "input": MODEL,
                                "output": MODEL,
                                "config": {"anyOf": [MODEL, {"type": "null"}]},
                            },
                        },
                    },
                },
            },
        },
        "problems": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["plugin", "distribution", "error"],
                "properties": {
                    "plugin": {"type": "string"},
                    "distribution": {"type": ["string", "null"]},
                    "error": {"type": "string"},
                },
            },
        },
    },
}


def test_plugins_json_has_the_documented_shape(
    wordcount_plugin_path: Path, broken_plugin_path: Path
) -> None:
    """plugins --json lists plugins, stages with schemas, and broken plugins in its shape."""
    result = run_stageflow(
        "plugins", "--json", pythonpath=[wordcount_plugin_path, broken_plugin_path]
    )
    assert result.returncode == 0, result.stderr
    listing = json.loads(result.stdout)
    jsonschema.validate(listing, PLUGINS_SHAPE)
    by_name = {plugin["name"]: plugin for plugin in listing["plugins"]}
    wordcount = by_name["wordcount"]
    assert (wordcount["distribution"], wordcount["version"]) == ("stageflow-wordcount", "1.2.3")
    stage = wordcount["stages"][0]
    assert stage["class"] == "stageflow_wordcount:WordCount"
    assert stage["input"]["schema"]["required"] == ["id", "text"]
    assert stage["config"]["schema"]["properties"]["lowercase"]["default"] is True
    assert [p["plugin"] for p in listing["problems"]] == ["broken"]
    assert by_name["seed"]["stages"][0]["config"] is None


def load(text: str) -> Any:
    return yaml.safe_load(text)


@pytest.fixture(scope="module")
def seed_editor_schema() -> dict[str, Any]:
    """The editor schema as `stageflow schema --editor` prints it (seed plugin installed)."""
    result = run_stageflow("schema", "--editor")
    assert result.returncode == 0, result.stderr
    schema: dict[str, Any] = json.loads(result.stdout)
    jsonschema.Draft202012Validator.check_schema(schema)
    return schema


def test_editor_schema_accepts_the_seed_pipeline(seed_editor_schema: dict[str, Any]) -> None:
    """The bundled seed pipeline file, and a module:Class stage, validate."""
    seed = load((REPO / "examples" / "seed" / "pipeline.yaml").read_text(encoding="utf-8"))
    jsonschema.validate(seed, seed_editor_schema)
    seed["stages"].append({"name": "x", "uses": "tests.engine.stages:Split", "config": {"a": 1}})
    jsonschema.validate(seed, seed_editor_schema)


@pytest.mark.parametrize(
    ("stage", "complaint"),
    [
        ({"name": "c", "uses": "collector", "config": {"progres_every": 5}}, "progres_every"),
        ({"name": "c", "uses": "collector", "config": {"progress_every": 0}}, "minimum"),
        ({"name": "p", "uses": "preprocessor", "config": {"scale": 2}}, "scale"),
        ({"name": "c", "uses": "colector"}, "colector"),
    ],
)
def test_editor_schema_rejects_per_stage_mistakes(
    seed_editor_schema: dict[str, Any], stage: dict[str, Any], complaint: str
) -> None:
    """A config key typo, a bad value, config for a stage without one, an unknown stage."""
    document = {"name": "p", "stages": [stage]}
    errors = list(jsonschema.Draft202012Validator(seed_editor_schema).iter_errors(document))
    assert errors, f"{stage} was accepted"
    assert complaint in " ".join(str(e.message) for e in _leaves(errors))


def _leaves(errors: list[Any]) -> list[Any]:
    found = []
    for error in errors:
        found.append(error)
        found += _leaves(list(error.context or ()))
    return found


class Retry(BaseModel):
    attempts: int = 3


class Nested(BaseModel):
    retry: Retry = Retry()
    open_ended: dict[str, int] = {}


class Open(BaseModel):
    model_config = ConfigDict(extra="allow")
    level: int = 1


def _stage(stage_name: str, config: type[BaseModel]) -> type[stageflow.Stage]:
    return type(
        f"Stage_{stage_name}",
        (stageflow.Stage,),
        {
            "name": stage_name,
            "Input": Retry,
            "Output": Retry,
            "Config": config,
            "process": lambda self, item: item,
        },
    )


def test_editor_schema_relocates_nested_models_and_respects_extra() -> None:
    """Nested Config models resolve and are closed; a model allowing extra keys stays open."""
    registry = StageRegistry(
        stages={
            name: StageEntry(_stage(name, config))
            for name, config in (("nested", Nested), ("open", Open))
        }
    )
    validator = jsonschema.Draft202012Validator(editor_schema(registry))
    ok = {
        "name": "n",
        "stages": [
            {"name": "a", "uses": "nested", "config": {"retry": {"attempts": 1}}},
            {"name": "b", "uses": "open", "config": {"level": 2, "anything": True}},
        ],
    }
    assert list(validator.iter_errors(ok)) == []
    typo = {
        "name": "n",
        "stages": [{"name": "a", "uses": "nested", "config": {"retry": {"atempts": 1}}}],
    }
    assert list(validator.iter_errors(typo))


def test_editor_schema_lists_every_installed_stage() -> None:
    """uses: offers exactly the installed stage names for completion."""
    schema = editor_schema(load_registry())
    choices = schema["$defs"]["StageSpec"]["properties"]["uses"]["anyOf"]
    assert choices[0]["enum"] == sorted(load_registry().stages)


class Opaque:
    """A type pydantic can hold but not describe in JSON Schema."""


class Holder(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True)
    thing: Opaque | None = None


def test_a_model_without_a_schema_is_reported_not_fatal() -> None:
    """plugins --json and the editor schema carry on past it; check_stage names the problem."""
    from stageflow.cli.plugins import describe
    from stageflow.testing import check_stage

    cls = _stage("opaque", Holder)
    listing = describe(StageRegistry(stages={"opaque": StageEntry(cls, "kit")}))
    jsonschema.validate(listing, PLUGINS_SHAPE)
    config = listing["plugins"][0]["stages"][0]["config"]
    assert config["schema"] is None and "PydanticInvalidForJsonSchema" in config["schema_error"]
    with pytest.raises(stageflow.PluginError, match="do not produce JSON Schemas"):
        check_stage(cls)
    registry = StageRegistry(
        stages={"opaque": StageEntry(cls), "nested": StageEntry(_stage("nested", Nested))}
    )
    validator = jsonschema.Draft202012Validator(editor_schema(registry))
    document = {"name": "n", "stages": [{"name": "o", "uses": "opaque", "config": {"any": 1}}]}
    assert list(validator.iter_errors(document)) == []
