"""JSON Schemas of pipeline files and of stages' models, for editors and other tools.

The pipeline-file schema comes from :class:`~stageflow.pipeline.PipelineSpec`; point an
editor at it with a first line such as::

    # yaml-language-server: $schema=../../schemas/pipeline.schema.json

A stage's schemas are those of its ``Input`` (what it validates), its ``Output`` (what it
emits, in serialization mode) and its ``Config``. Output is deterministic: :func:`dumps`
sorts keys and ends with a newline, so generated files can be committed and compared.

:func:`editor_schema` is the pipeline-file schema specialised for the installed stages:
``uses:`` lists their names, and a JSON Schema ``if``/``then`` per stage gives ``config:``
that stage's Config schema, closed to unknown keys, so an editor completes and checks
config keys per stage.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from stageflow.pipeline import PipelineSpec
from stageflow.plugins import StageRegistry
from stageflow.stage import Stage

__all__ = [
    "DIALECT",
    "PIPELINE_SCHEMA_FILE",
    "RUN_REPORT_SCHEMA_FILE",
    "dumps",
    "editor_schema",
    "pipeline_schema",
    "render_all",
    "stage_schemas",
    "write_all",
]

DIALECT = "https://json-schema.org/draft/2020-12/schema"
PIPELINE_SCHEMA_FILE = "pipeline.schema.json"
RUN_REPORT_SCHEMA_FILE = "run-report.schema.json"
STAGES_DIR = "stages"
_KINDS = ("input", "output", "config")


def pipeline_schema() -> dict[str, Any]:
    """The JSON Schema of a pipeline file."""
    schema = PipelineSpec.model_json_schema(mode="validation")
    schema["$schema"] = DIALECT
    schema["description"] = (
        "A stageflow pipeline file: a name and the stages records flow through, in order. "
        "Check one with `stageflow validate FILE`."
    )
    return schema


def editor_schema(registry: StageRegistry) -> dict[str, Any]:
    """The pipeline-file schema with the registry's stage names and per-stage config keys."""
    schema = pipeline_schema()
    schema["description"] += " Specialised for the stages installed where it was made."
    defs: dict[str, Any] = schema["$defs"]
    stage_spec = defs["StageSpec"]
    names = sorted(registry.stages)
    choices: list[dict[str, Any]] = [
        {
            "type": "string",
            "pattern": r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$",
            "description": "A stage class given as package.module:Class.",
        }
    ]
    if names:
        choices.insert(0, {"enum": names, "description": "An installed stage."})
    stage_spec["properties"]["uses"] = {
        "description": stage_spec["properties"]["uses"]["description"],
        "anyOf": choices,
    }
    rules = []
    for name in names:
        cls = registry.stages[name].cls
        if cls.Config is None:
            config: dict[str, Any] = {
                "type": "object",
                "maxProperties": 0,
                "description": f"Stage {name!r} takes no configuration.",
            }
        else:
            try:
                config = _embedded(cls.Config.model_json_schema(mode="validation"), name, defs)
            except Exception as exc:  # noqa: BLE001 - one stage's schema must not sink the rest
                config = {
                    "type": "object",
                    "description": f"Stage {name!r}: no schema ({type(exc).__name__}: {exc}).",
                }
        rules.append(
            {
                "if": {"properties": {"uses": {"const": name}}, "required": ["uses"]},
                "then": {"properties": {"config": config}},
            }
        )
    if rules:
        stage_spec["allOf"] = rules
    return schema


def _embedded(schema: dict[str, Any], stage: str, defs: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with its ``$defs`` moved into ``defs`` under the stage's prefix, closed.

    Objects that come from models get ``additionalProperties: false`` unless the model says
    otherwise: an unknown key in a ``config:`` block is a typo.
    """
    local = schema.pop("$defs", {})
    prefix = f"{stage}."

    def relocate(node: Any) -> Any:
        if isinstance(node, dict):
            moved = {key: relocate(value) for key, value in node.items()}
            ref = moved.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                moved["$ref"] = "#/$defs/" + prefix + ref.removeprefix("#/$defs/")
            if "properties" in moved and "additionalProperties" not in moved:
                moved["additionalProperties"] = False
            return moved
        if isinstance(node, list):
            return [relocate(value) for value in node]
        return node

    for key, value in local.items():
        defs[prefix + key] = relocate(value)
    return dict(relocate(schema))


def stage_schemas(cls: type[Stage]) -> dict[str, dict[str, Any]]:
    """The schemas of one stage's models: ``input``, ``output`` and, if it has one, ``config``."""
    schemas = {
        "input": cls.Input.model_json_schema(mode="validation"),
        "output": cls.Output.model_json_schema(mode="serialization"),
    }
    if cls.Config is not None:
        schemas["config"] = cls.Config.model_json_schema(mode="validation")
    for kind, schema in schemas.items():
        schema["$schema"] = DIALECT
        schema.setdefault("description", f"The {kind} model of stageflow stage {cls.name!r}.")
    return schemas


def dumps(schema: dict[str, Any]) -> str:
    """Serialize a schema deterministically: sorted keys, two-space indent, final newline."""
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def render_all(stages: Iterable[type[Stage]]) -> dict[str, str]:
    """Every schema file for the pipeline format and ``stages``, by relative path."""
    from stageflow.observe.report_json import report_schema

    files = {PIPELINE_SCHEMA_FILE: dumps(pipeline_schema())}
    files[RUN_REPORT_SCHEMA_FILE] = dumps({"$schema": DIALECT, **report_schema()})
    for cls in sorted(stages, key=lambda c: c.name):
        for kind, schema in stage_schemas(cls).items():
            files[f"{STAGES_DIR}/{cls.name}.{kind}.json"] = dumps(schema)
    return files


def write_all(directory: str | Path, registry: StageRegistry) -> tuple[list[Path], list[Path]]:
    """Write the schema files of the registry's stages under ``directory``.

    Stage schema files already in ``directory/stages`` that no installed stage produces any
    more are removed, so the directory mirrors the installed stages. Returns the paths
    written and the paths removed.
    """
    root = Path(directory)
    files = render_all(entry.cls for entry in registry.stages.values())
    removed: list[Path] = []
    stages_dir = root / STAGES_DIR
    if stages_dir.is_dir():
        suffixes = tuple(f".{kind}.json" for kind in _KINDS)
        for old in sorted(stages_dir.glob("*.json")):
            if f"{STAGES_DIR}/{old.name}" not in files and old.name.endswith(suffixes):
                old.unlink()
                removed.append(old)
    written: list[Path] = []
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8", newline="\n")
        written.append(path)
    return written, removed
