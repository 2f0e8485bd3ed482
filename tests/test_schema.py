"""JSON Schemas: the committed schemas/ match the code, and the CLI writes them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from stageflow_seed import Collector, Preprocessor, stageflow_register_stages

from stageflow.pipeline import PipelineSpec
from stageflow.schema import pipeline_schema, render_all, stage_schemas
from tests.helpers import REPO, run_stageflow

SCHEMAS = REPO / "schemas"
SEED_PIPELINE = REPO / "examples" / "seed" / "pipeline.yaml"
REGENERATE = "stageflow schema --all -o schemas"


def committed_files() -> dict[str, str]:
    return {
        path.relative_to(SCHEMAS).as_posix(): path.read_text(encoding="utf-8")
        for path in sorted(SCHEMAS.rglob("*.json"))
    }


def test_committed_schemas_match_the_code() -> None:
    """schemas/ holds exactly what the code generates for the pipeline format and seed stages."""
    expected = render_all(stageflow_register_stages())
    committed = committed_files()
    assert sorted(committed) == sorted(expected), (
        f"schemas/ has the wrong set of files; regenerate with `{REGENERATE}` "
        "(with only the seed plugin installed)"
    )
    stale = [name for name in expected if committed[name] != expected[name]]
    assert stale == [], f"schemas/ is out of date ({', '.join(stale)}); run `{REGENERATE}`"


def test_schema_command_prints_the_pipeline_schema() -> None:
    """`stageflow schema` prints the committed pipeline schema byte for byte."""
    result = run_stageflow("schema")
    assert result.returncode == 0, result.stderr
    assert result.stdout == (SCHEMAS / "pipeline.schema.json").read_text(encoding="utf-8")


def test_schema_all_writes_the_same_tree(tmp_path: Path) -> None:
    """`stageflow schema --all -o DIR` writes the committed files and prunes stale stage files."""
    out = tmp_path / "schemas"
    (out / "stages").mkdir(parents=True)
    (out / "stages" / "gone.input.json").write_text("{}\n")
    (out / "stages" / "notes.txt.json").write_text("kept: not a stage schema\n")
    result = run_stageflow("schema", "--all", "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert f"removed {out / 'stages' / 'gone.input.json'}" in result.stdout
    written = {
        p.relative_to(out).as_posix(): p.read_text(encoding="utf-8")
        for p in sorted(out.rglob("*.json"))
        if p.name != "notes.txt.json"
    }
    assert written == committed_files()
    assert (out / "stages" / "notes.txt.json").exists()


def test_schema_stage_prints_one_stage() -> None:
    """`stageflow schema --stage NAME` prints that stage's input, output and config schemas."""
    result = run_stageflow("schema", "--stage", "collector")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == json.loads(json.dumps(stage_schemas(Collector)))
    assert sorted(json.loads(result.stdout)) == ["config", "input", "output"]


def test_schema_usage_errors() -> None:
    """-o without --all, or an unknown stage, exits 2 with one line."""
    result = run_stageflow("schema", "-o", "somewhere")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "--all and -o DIR go together" in result.stderr
    result = run_stageflow("schema", "--stage", "nosuch")
    assert result.returncode == 2
    assert result.stderr.startswith("stageflow: error: unknown stage 'nosuch'")


def test_stage_schemas_describe_the_models() -> None:
    """A stage without Config has input and output schemas only, with the model titles."""
    schemas = stage_schemas(Preprocessor)
    assert sorted(schemas) == ["input", "output"]
    assert schemas["input"]["title"] == "RawSeries"
    assert schemas["output"]["title"] == "Preprocessed"
    assert schemas["input"]["required"] == ["id", "raw_values"]


def keys_follow_schema(data: Any, schema: dict[str, Any], root: dict[str, Any]) -> list[str]:
    """Keys of ``data`` that the object schema does not declare (a structural spot check)."""
    if "$ref" in schema:
        schema = root["$defs"][schema["$ref"].rsplit("/", 1)[-1]]
    problems = []
    if isinstance(data, dict) and "properties" in schema:
        for key, value in data.items():
            if key not in schema["properties"]:
                problems.append(key)
            else:
                problems += keys_follow_schema(value, schema["properties"][key], root)
        problems += [f"missing {k}" for k in schema.get("required", []) if k not in data]
    elif isinstance(data, list) and "items" in schema:
        for value in data:
            problems += keys_follow_schema(value, schema["items"], root)
    return problems


def test_pipeline_schema_fits_the_seed_example() -> None:
    """The seed example validates as a PipelineSpec and uses only keys the schema declares."""
    text = SEED_PIPELINE.read_text(encoding="utf-8")
    data = yaml.safe_load(text)
    spec = PipelineSpec.model_validate(data)
    assert spec.name == "seed-analysis"
    schema = pipeline_schema()
    assert schema["title"] == "stageflow pipeline"
    assert schema["additionalProperties"] is False
    assert keys_follow_schema(data, schema, schema) == []
    # The editor hint on the first line points at the committed schema.
    first = text.splitlines()[0]
    assert first.startswith("# yaml-language-server: $schema=")
    target = (SEED_PIPELINE.parent / first.split("=", 1)[1]).resolve()
    assert target == (SCHEMAS / "pipeline.schema.json").resolve()


def test_every_pipeline_field_is_described() -> None:
    """Each property of the pipeline schema carries a description for editors' tooltips."""
    schema = pipeline_schema()
    for props in (schema["properties"], schema["$defs"]["StageSpec"]["properties"]):
        for name, prop in props.items():
            assert prop.get("description"), f"pipeline schema property {name!r} lacks one"
