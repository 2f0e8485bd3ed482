"""Pipeline definitions and `stageflow validate`: every static check, with one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel

import stageflow
from stageflow.errors import PipelineError, SchemaMismatchError, StageConfigError
from stageflow.pipeline import Pipeline
from stageflow.plugins import load_registry
from tests.helpers import REPO, run_stageflow

SEED_PIPELINE = REPO / "examples" / "seed" / "pipeline.yaml"


class Line(BaseModel):
    id: str
    text: str


class Count(BaseModel):
    id: str
    words: int


class Total(BaseModel):
    id: str
    total: float


class CountConfig(BaseModel):
    lowercase: bool = True


class WordCount(stageflow.Stage):
    name = "wc"
    Input = Line
    Output = Count
    Config = CountConfig

    def process(self, item: Line) -> Count:
        return Count(id=item.id, words=len(item.text.split()))


class Summer(stageflow.Stage):
    name = "summer"
    Input = Total
    Output = Total

    def process(self, item: Total) -> Total:
        return item


class NeedsText(stageflow.Stage):
    name = "needs-text"
    Input = Line
    Output = Line

    def process(self, item: Line) -> Line:
        return item


def test_validate_accepts_the_seed_example() -> None:
    """`stageflow validate` exits 0 on examples/seed/pipeline.yaml, names the chain and fusion."""
    result = run_stageflow("validate", str(SEED_PIPELINE))
    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        f"{SEED_PIPELINE}: pipeline 'seed-analysis' is valid (preprocess → analyze → collect)\n"
        "  fused: preprocess + analyze (4 processes)\n"
    )


SEED_STAGES = "  - {name: prep, uses: preprocessor}\n  - {name: stats, uses: analyzer}\n"

INVALID = {
    "unknown-stage": (
        "name: p\nstages:\n  - {name: a, uses: preprocesser}\n",
        "unknown stage 'preprocesser': did you mean 'preprocessor'? install the plugin that "
        "provides it or use one of analyzer, collector, preprocessor",
    ),
    "invalid-config": (
        "name: p\nstages:\n  - name: c\n    uses: collector\n    config: {progress_every: 0}\n",
        "stage 'c' (collector): config field 'progress_every': Input should be greater than "
        "or equal to 1; fix the stage's `config:` block",
    ),
    "config-for-stage-without-config": (
        "name: p\nstages:\n  - {name: a, uses: preprocessor, config: {scale: 2}}\n",
        "stage 'a' (preprocessor) takes no configuration but `config:` sets scale; "
        "remove the `config:` block",
    ),
    "schema-mismatch": (
        "name: p\nstages:\n  - {name: prep, uses: preprocessor}\n"
        "  - {name: collect, uses: collector}\n",
        "prep → collect: collect needs field 'analyzed_at' (float) that prep's output "
        "Preprocessed does not provide; collect needs field 'mean' (float) that prep's output "
        "Preprocessed does not provide; collect needs field 'variance' (float) that prep's "
        "output Preprocessed does not provide; collect needs field 'trend' (Literal['increasing', "
        "'decreasing', 'unknown']) that prep's output Preprocessed does not provide",
    ),
    "bad-yaml": (
        "name: p\nstages: [\n",
        "pipeline file '{path}' is not valid YAML at line 3: expected the node content, "
        "but found '<stream end>'; fix the syntax",
    ),
    "not-a-mapping": (
        "- just\n- a list\n",
        "pipeline file '{path}' must be a mapping with `name:` and `stages:`; found list",
    ),
    "duplicate-names": (
        "name: p\nstages:\n" + SEED_STAGES + "  - {name: prep, uses: analyzer}\n",
        "pipeline file '{path}': stages: stage name 'prep' is used twice, but names must be "
        "unique; fix the file (`stageflow schema` prints its format)",
    ),
    "negative-workers": (
        "name: p\nstages:\n  - {name: prep, uses: preprocessor, workers: -1}\n",
        "pipeline file '{path}': stages.0.workers (stage 'prep'): Input should be greater "
        "than or equal to 0; fix the file (`stageflow schema` prints its format)",
    ),
    "autoscale-min-above-max": (
        "name: p\nstages:\n  - {name: prep, uses: preprocessor, workers: {min: 4, max: 2}}\n",
        "pipeline file '{path}': stages.0.workers (stage 'prep'): min 4 is more than max 2; "
        "fix the file (`stageflow schema` prints its format)",
    ),
    "autoscale-stateful": (
        "name: p\nstages:\n" + SEED_STAGES
        + "  - {name: collect, uses: collector, workers: {min: 1, max: 4}}\n",
        "stage 'collect' keeps state (finish() or `stateful`), so each of its workers holds a "
        "part of it and it cannot autoscale; give it a fixed `workers: N`",
    ),
    "misspelt-key": (
        "name: p\nstages:\n  - {name: prep, uses: preprocessor, worker: 2}\n",
        "pipeline file '{path}': stages.0.worker (stage 'prep'): unknown key 'worker'; did "
        "you mean 'workers'? the known keys are name, uses, workers, config, retries, timeout, "
        "key, stateful, fuse; fix the file (`stageflow schema` prints its format)",
    ),
    "unknown-top-level-key": (
        "name: p\nstage:\n  - {name: prep, uses: preprocessor}\n",
        "pipeline file '{path}': stage: unknown key 'stage'; did you mean 'stages'? the known "
        "keys are name, stages; fix the file (`stageflow schema` prints its format)",
    ),
    "no-stages": (
        "name: p\nstages: []\n",
        "pipeline file '{path}': stages: a pipeline needs at least one stage; fix the file "
        "(`stageflow schema` prints its format)",
    ),
}


@pytest.mark.parametrize("case", sorted(INVALID))
def test_validate_rejects_with_one_line(case: str, tmp_path: Path) -> None:
    """Each invalid pipeline exits 2 with exactly one error line and no traceback."""
    text, expected = INVALID[case]
    path = tmp_path / f"{case}.yaml"
    path.write_text(text, encoding="utf-8")
    result = run_stageflow("validate", str(path))
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == f"stageflow: error: {expected.format(path=path)}\n"


def test_validate_missing_file(tmp_path: Path) -> None:
    """A pipeline file that does not exist exits 2 naming the path."""
    path = tmp_path / "nowhere.yaml"
    result = run_stageflow("validate", str(path))
    assert result.returncode == 2
    assert result.stderr == (
        f"stageflow: error: cannot read pipeline file '{path}': No such file or directory; "
        "check the path\n"
    )


def test_pipeline_from_python_classes() -> None:
    """`uses=` may be a Stage class; the config is validated and bound per stage."""
    pipeline = Pipeline(
        "counts",
        [{"name": "count", "uses": WordCount, "workers": 3, "config": {"lowercase": False}}],
    )
    [stage] = pipeline.stages
    assert (stage.name, stage.cls, stage.workers) == ("count", WordCount, 3)
    assert stage.config == CountConfig(lowercase=False)
    assert stage.config_json() == '{"lowercase":false}'
    assert stage.spec.uses == f"{__name__}:WordCount"
    assert repr(pipeline) == f"<Pipeline 'counts': count[{__name__}:WordCountx3]>"


def test_pipeline_from_dict_by_reference_and_registry() -> None:
    """`package.module:Class` references and registered names mix in one pipeline."""
    pipeline = Pipeline.from_dict(
        {
            "name": "mixed",
            "stages": [
                {"name": "prep", "uses": "stageflow_seed.stages:Preprocessor"},
                {"name": "stats", "uses": "analyzer"},
            ],
        },
        registry=load_registry(),
    )
    assert [s.cls.name for s in pipeline.stages] == ["preprocessor", "analyzer"]


def test_python_pipeline_mismatch_raises() -> None:
    """An Output→Input mismatch between Python-defined stages raises SchemaMismatchError."""
    with pytest.raises(SchemaMismatchError) as info:
        Pipeline("p", [{"name": "count", "uses": WordCount}, {"name": "sum", "uses": Summer}])
    assert str(info.value) == (
        "count → sum: sum needs field 'total' (float) that count's output Count does not provide"
    )


def test_check_schemas_false_keeps_mismatches() -> None:
    """With check_schemas=False every mismatch is kept on the pipeline instead of raised."""
    pipeline = Pipeline(
        "p",
        [
            {"name": "count", "uses": WordCount},
            {"name": "sum", "uses": Summer},
            {"name": "text", "uses": NeedsText},
        ],
        check_schemas=False,
    )
    assert [(m.upstream, m.downstream, m.field) for m in pipeline.mismatches] == [
        ("count", "sum", "total"),
        ("sum", "text", "text"),
    ]


def test_python_pipeline_config_error() -> None:
    """A bad config for a Python-defined stage names the stage and the field."""
    with pytest.raises(StageConfigError, match="config field 'lowercase'"):
        Pipeline("p", [{"name": "count", "uses": WordCount, "config": {"lowercase": "maybe"}}])


def test_non_stage_class_is_rejected() -> None:
    """A class that is not a Stage given as `uses` is a PipelineError."""
    with pytest.raises(PipelineError, match=r"is not a stageflow\.Stage subclass"):
        Pipeline("p", [{"name": "x", "uses": Line}])


def test_python_definition_errors_name_the_stage() -> None:
    """An invalid stage in a Python definition is named, without mentioning a file."""
    with pytest.raises(PipelineError) as info:
        Pipeline("p", [{"name": "count", "uses": WordCount, "workers": -1}])
    assert str(info.value) == (
        "pipeline definition: stages.0.workers (stage 'count'): Input should be greater than "
        "or equal to 0; fix it"
    )


class Pair(BaseModel):
    id: str
    left: int
    right: list[str]


class NeedsPair(stageflow.Stage):
    name = "needs-pair"
    Input = Pair
    Output = Pair

    def process(self, item: Pair) -> Pair:
        return item


def test_a_schema_mismatch_names_every_field() -> None:
    """Every missing or incompatible field of an edge is in the error, not only the first."""
    with pytest.raises(SchemaMismatchError) as info:
        Pipeline("p", [{"name": "count", "uses": WordCount}, {"name": "pair", "uses": NeedsPair}])
    assert str(info.value) == (
        "count → pair: pair needs field 'left' (int) that count's output Count does not provide; "
        "pair needs field 'right' (list[str]) that count's output Count does not provide"
    )


class LooseConfig(BaseModel, extra="allow"):
    lowercase: bool = True


class StrictConfig(BaseModel, extra="forbid"):
    lowercase: bool = True
    progress_every: int = 100


class LooseCount(WordCount):
    Config = LooseConfig


class StrictCount(WordCount):
    Config = StrictConfig


def test_unknown_config_keys_are_an_error_with_the_closest_match() -> None:
    """A misspelt `config:` key is refused, naming it, its closest match and the known keys."""
    with pytest.raises(StageConfigError) as info:
        Pipeline("p", [{"name": "count", "uses": WordCount, "config": {"lowercas": False}}])
    assert str(info.value) == (
        f"stage 'count' ({__name__}:WordCount): unknown config key 'lowercas' (did you mean "
        "'lowercase'?); the known keys are lowercase; fix the stage's `config:` block"
    )
    with pytest.raises(StageConfigError) as info:
        Pipeline(
            "p",
            [{"name": "c", "uses": StrictCount, "config": {"progres_every": 5, "colour": 1}}],
        )
    assert "unknown config keys 'progres_every' (did you mean 'progress_every'?), 'colour';" in (
        str(info.value)
    )
    assert "the known keys are lowercase, progress_every;" in str(info.value)


def test_a_config_allowing_extra_keys_takes_any_key() -> None:
    """A Config with extra="allow" accepts keys it does not declare, as it says."""
    pipeline = Pipeline("p", [{"name": "c", "uses": LooseCount, "config": {"colour": "red"}}])
    assert pipeline.stages[0].config.model_extra == {"colour": "red"}  # type: ignore[union-attr]


class Keyed(BaseModel):
    user: str


class PerUser(stageflow.Stage):
    name = "per-user"
    Input = Keyed
    Output = Keyed

    def process(self, item: Keyed) -> Keyed:
        return item


BAD_BOUNDS = {
    "min 0": (
        {"min": 0, "max": 2},
        "an autoscaled stage needs min at least 1, not 0 (for a stage served only by joined "
        "workers write `workers: 0`)",
    ),
    "above the cap": ({"min": 1, "max": 257}, "max 257 is above the cap of 256 workers per stage"),
    "initial outside": ({"min": 2, "max": 4, "initial": 1}, "initial 1 is outside min..max (2..4)"),
    "no max": ({"min": 2}, "{min, max} needs max too"),
    "unknown key": (
        {"min": 1, "max": 2, "maxi": 3},
        "unknown key 'maxi' in {min, max}; did you mean 'max'? the known keys are min, max, "
        "initial",
    ),
    "not a number": (
        "many",
        "'many' is not a number of workers; write a whole number, or {min: N, max: M} to "
        "autoscale",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_BOUNDS))
def test_bad_autoscale_bounds_are_one_sentence_naming_the_stage(case: str) -> None:
    """Each bad `workers: {min, max}` is one PipelineError naming the stage and the problem."""
    workers, message = BAD_BOUNDS[case]
    with pytest.raises(PipelineError) as info:
        Pipeline("p", [{"name": "users", "uses": PerUser, "workers": workers}])
    assert str(info.value) == (
        f"pipeline definition: stages.0.workers (stage 'users'): {message}; fix it"
    )


def test_autoscale_bounds_are_accepted_and_a_keyed_stage_refuses_them() -> None:
    """{min, max} starts at min (or initial); on a keyed stage it is refused in one sentence."""
    pipeline = Pipeline(
        "p",
        [
            {"name": "a", "uses": PerUser, "workers": {"min": 2, "max": 5}},
            {"name": "b", "uses": PerUser, "workers": {"min": 1, "max": 3, "initial": 3}},
        ],
    )
    assert [(s.workers, str(s.bounds)) for s in pipeline.stages] == [(2, "2..5"), (3, "1..3")]
    bounds = {"min": 1, "max": 2}
    with pytest.raises(PipelineError) as info:
        Pipeline("p", [{"name": "users", "uses": PerUser, "key": "user", "workers": bounds}])
    assert str(info.value) == (
        "stage 'users' is keyed by 'user', so its worker count is fixed by its key slots and "
        "cannot autoscale; give it a fixed `workers: N`"
    )
