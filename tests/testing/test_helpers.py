"""check_stage, examples_for, the pytest plugin's fixtures and stageflow.testing's surface."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from pydantic import BaseModel, ConfigDict, Field
from stageflow_seed import Analyzer, Collector, Preprocessor, RawSeries

import stageflow
import stageflow.testing
from stageflow.errors import PluginError, StageflowError
from stageflow.testing import check_stage, examples_for, model_strategy, run_pipeline, run_stage
from tests.testing.stages import Count, Line, LongWord, Words

HERE = Path(__file__).parent


def test_testing_all_is_sorted_and_complete() -> None:
    """stageflow.testing's __all__ is sorted and names exactly its public attributes."""
    names = stageflow.testing.__all__
    assert names == sorted(names)
    public = {
        name
        for name, value in vars(stageflow.testing).items()
        if not name.startswith("_") and not isinstance(value, type(stageflow))
    }
    assert public == set(names)


def test_check_stage_accepts_the_seed_stages() -> None:
    """The seed stages keep the contract, and Preprocessor's Output feeds Analyzer."""
    contract = check_stage(Preprocessor, feeds=Analyzer)
    assert set(contract.schemas) == {"input", "output"}
    assert set(check_stage(Collector).schemas) == {"input", "output", "config"}


def test_check_stage_names_every_problem() -> None:
    """An undocumented required Config field and an Output that cannot feed are both named."""

    class Needs(BaseModel):
        path: str
        documented: int = Field(description="the number of lanes; required")

    class Bad(stageflow.Stage):
        name = "kit-bad"
        Input = Line
        Output = Line
        Config = Needs

        def process(self, item: Line) -> Line:
            return item

    with pytest.raises(PluginError) as caught:
        check_stage(Bad, feeds=[Count])
    message = str(caught.value)
    assert "Config field 'path' has no default and no description" in message
    assert "'documented'" not in message
    assert "kit-count needs field 'word'" in message


def test_check_stage_finds_an_alias_the_model_cannot_read_back() -> None:
    """An aliased field written by name and read only by alias breaks the wire: named."""

    class Tagged(BaseModel):
        kind: str = Field(alias="type")

    class Fixed(Tagged):
        model_config = ConfigDict(serialize_by_alias=True)

    class Aliased(stageflow.Stage):
        name = "kit-aliased"
        Input = Line
        Output = Tagged

        def process(self, item: Line) -> Tagged:
            return Tagged(type=item.text)

    with pytest.raises(PluginError, match="Output Tagged writes field 'kind' under that name"):
        check_stage(Aliased)
    Aliased.Output = Fixed
    check_stage(Aliased)


def test_check_stage_rejects_a_broken_definition() -> None:
    """A stage without Output fails the loader's own definition check."""

    class NoOutput(stageflow.Stage):
        name = "kit-no-output"
        Input = Line

        def process(self, item: Any) -> Any:
            return item

    with pytest.raises(PluginError, match="needs `Output`"):
        check_stage(NoOutput)


def test_examples_for_builds_valid_repeatable_records() -> None:
    """examples_for gives n distinct valid records, the same ones for the same seed."""

    class Constrained(BaseModel):
        id: str = Field(min_length=3)
        count: int = Field(ge=1, le=9)
        values: list[float]

    first = examples_for(Constrained, 8)
    assert len(first) == 8
    assert len({e.model_dump_json() for e in first}) == 8
    assert all(len(e.id) >= 3 and 1 <= e.count <= 9 for e in first)
    assert [e.model_dump_json() for e in examples_for(Constrained, 8)] == [
        e.model_dump_json() for e in first
    ]


def test_examples_for_handles_aliases_any_and_nested_models() -> None:
    """Aliased fields, Any values and nested models in containers all get valid examples."""

    class Inner(BaseModel):
        level: int = Field(ge=0, le=3)

    class Outer(BaseModel):
        model_config = ConfigDict(serialize_by_alias=True)
        kind: str = Field(alias="type", min_length=1)
        extra: dict[str, Any]
        inners: list[Inner]
        maybe: Inner | None = None

    found = examples_for(Outer, 5)
    assert len(found) == 5
    for example in found:
        assert Outer.model_validate_json(example.model_dump_json(by_alias=True)) == example


def test_examples_for_says_when_no_record_survives_the_wire() -> None:
    """An alias the model does not write back makes every example fail: one clear error."""

    class Aliased(BaseModel):
        kind: str = Field(alias="type")

    with pytest.raises(StageflowError, match="no valid Aliased survives the trip"):
        examples_for(Aliased, 3)


def test_examples_feed_a_stage_as_a_property_test() -> None:
    """Sample LongWords through kit-count: one Letters per word, the word's length."""
    samples = examples_for(LongWord, 30)
    result = run_stage(Count, samples)
    expected = [(s.id, len(s.word)) for s in samples if s.word not in ("none", "ouch")]
    assert [(o.id, o.letters) for o in result.outputs] == expected
    assert [entry["message"] for entry in result.dead_letters] == [
        "finish() failed: finish() of kit-count always fails"
    ]


@given(model_strategy(RawSeries))
@settings(max_examples=25, deadline=None)
def test_model_strategy_draws_valid_records_inside_given(series: RawSeries) -> None:
    """model_strategy works inside @given and gives records that validate from their JSON."""
    assert RawSeries.model_validate_json(series.model_dump_json()) == series


def test_pytest_plugin_is_registered_through_its_entry_point(
    request: pytest.FixtureRequest,
) -> None:
    """pytest loaded stageflow's plugin from the pytest11 entry point."""
    assert request.config.pluginmanager.has_plugin("stageflow")


def test_registry_fixture_resolves_temporary_stages(
    stageflow_registry: Any,
    stageflow_run_stage: Callable[..., Any],
    stageflow_pipeline: Callable[[str], Any],
) -> None:
    """Stages registered in the fixture resolve by name for run_stage and pipeline files."""
    stageflow_registry.register(Words, Count)
    result = stageflow_run_stage("kit-words", [{"id": "1", "text": "ab cd"}])
    assert [o.word for o in result.outputs] == ["ab", "cd"]
    pipeline = stageflow_pipeline("pipelines/by-name.yaml")
    assert [o.letters for o in run_pipeline(pipeline, ['{"id": "1", "text": "abc"}']).outputs] == [
        3
    ]


def test_registry_fixture_starts_fresh(stageflow_registry: Any) -> None:
    """The previous test's temporary stages are gone; installed plugins are there."""
    assert "kit-words" not in stageflow_registry.registry.stages
    assert "preprocessor" in stageflow_registry.registry.stages
    with pytest.raises(PluginError, match="already registered"):

        class Clash(Words):
            name = "preprocessor"

        stageflow_registry.register(Clash)
