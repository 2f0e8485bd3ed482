"""The graph model: what build_graph keeps from a Pipeline."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, create_model

from stageflow import Pipeline, Stage
from stageflow.graph import build_graph
from stageflow.graph.model import visible
from tests.graph import cases, stages


def test_stages_keep_pipeline_order_and_origin() -> None:
    """Each stage node carries its name, uses, workers, plugin origin and models, in order."""
    graph = cases.wordcount()
    assert [s.name for s in graph.stages] == ["split", "count"]
    split = graph.stages[0]
    assert (split.uses, split.workers, split.reference) == ("split", 2, "tests.graph.stages:Split")
    assert (split.plugin, split.distribution, split.version) == (
        "wordcount",
        "stageflow-wordcount",
        "1.2.3",
    )
    assert (split.input.name, split.output.name) == ("Document", "Tokens")
    assert split.config is not None and split.config.name == "SplitConfig"
    assert split.config_values == {"lowercase": False}
    assert graph.stages[1].config is None and graph.stages[1].config_values is None


def test_edges_carry_the_upstream_output_model() -> None:
    """An edge joins consecutive stages and names the model that flows along it."""
    graph = cases.wordcount()
    (edge,) = graph.edges
    assert (edge.source, edge.target, edge.label, edge.ok) == (0, 1, "Tokens", True)
    assert graph.input.name == "Document" and graph.output.name == "Counts"


def test_mismatch_is_kept_on_its_edge() -> None:
    """A schema mismatch becomes a problem on the edge it concerns, with field and kind."""
    graph = cases.mismatch()
    (edge,) = graph.edges
    assert not edge.ok
    assert edge.label == "Tokens as Words"
    (problem,) = edge.problems
    assert (problem.field, problem.kind) == ("words", "missing")
    assert problem.marker == "✗ mismatch: missing 'words'"
    assert "words" in problem.message


def test_field_present_with_wrong_type_is_incompatible() -> None:
    """A field the upstream Output has with another type is marked incompatible, with types."""

    class Ids(BaseModel):
        ids: str

    class IdList(BaseModel):
        ids: list[int]

    class Make(Stage):
        name = "make"
        Input = Ids
        Output = Ids

        def process(self, item: Any) -> Any:
            return item

    class Use(Stage):
        name = "use"
        Input = IdList
        Output = IdList

        def process(self, item: Any) -> Any:
            return item

    pipeline = Pipeline(
        "p", [{"name": "a", "uses": Make}, {"name": "b", "uses": Use}], check_schemas=False
    )
    (problem,) = build_graph(pipeline).edges[0].problems
    assert (problem.kind, problem.provided, problem.needed) == ("incompatible", "str", "list[int]")
    assert problem.marker == "✗ mismatch: incompatible 'ids' (str, needs list[int])"


def test_models_with_the_same_qualified_name_get_distinct_ids() -> None:
    """Two runtime-made models sharing module and name still get separate ids and schemas."""
    first = create_model("Row", a=(int, ...))
    second = create_model("Row", b=(str, ...))

    def stage(name: str, model: type[BaseModel]) -> type[Stage]:
        return type(
            name.title(),
            (Stage,),
            {"name": name, "Input": model, "Output": model, "process": lambda s, i: i},
        )

    pipeline = Pipeline(
        "p",
        [{"name": "a", "uses": stage("a", first)}, {"name": "b", "uses": stage("b", second)}],
        check_schemas=False,
    )
    graph = build_graph(pipeline)
    ids = list(graph.models())
    assert len(ids) == 2 and ids[1] == ids[0] + "#2"


def test_model_without_json_schema_is_still_drawn() -> None:
    """A model with an arbitrary-type field has no JSON Schema; the graph keeps the reason."""

    class Handle:
        pass

    class Raw(BaseModel):
        model_config = ConfigDict(arbitrary_types_allowed=True)
        handle: Handle

    class Open(Stage):
        name = "open"
        Input = Raw
        Output = Raw

        def process(self, item: Any) -> Any:
            return item

    graph = build_graph(Pipeline("p", [{"name": "open", "uses": Open}]))
    assert graph.input.schema is None
    assert graph.input.schema_error


def test_visible_escapes_controls_and_bidi_overrides() -> None:
    """Newlines, escape sequences and right-to-left overrides are shown, not obeyed."""
    assert visible("a\nb\tc\x1b[31m\u202ed") == "a\\nb\\tc\\x1b[31m\\u202ed"
    assert visible("ü→語") == "ü→語"


def test_hostile_names_survive_unchanged_in_the_model() -> None:
    """The model keeps names as written; escaping is each renderer's job."""
    graph = cases.hostile()
    assert graph.stages[1].name == stages.HOSTILE
    assert graph.name == stages.HOSTILE
