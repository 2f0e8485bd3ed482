"""Static Output→Input compatibility (stageflow.compat.check_edge)."""

from __future__ import annotations

import datetime
import enum
import uuid
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Annotated, Any, Literal, Optional, Union

import pytest
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, computed_field

from stageflow.compat import Mismatch, check_edge, type_name


class Color(enum.Enum):
    RED = "red"


class Level(enum.IntEnum):
    LOW = 1


def model(name: str, **fields: Any) -> type[BaseModel]:
    """Build a model named ``name`` whose fields have the given annotations (all required)."""
    namespace: dict[str, Any] = {"__annotations__": dict(fields), "__module__": __name__}
    return type(name, (BaseModel,), namespace)


def edge(produced: Any, needed: Any) -> list[Mismatch]:
    """check_edge between a producer with field `x: produced` and a consumer with `x: needed`."""
    return check_edge("up", model("Out", x=produced), "down", model("In", x=needed))


class Sentence(BaseModel):
    id: str
    text: str
    count: str


class Stats(BaseModel):
    id: str
    tokens: list[str]
    count: int


def test_missing_field_message() -> None:
    """A required Input field absent from the Output is reported in the documented words."""
    mismatches = check_edge("split", Sentence, "stats", Stats)
    assert [str(m) for m in mismatches] == [
        "split → stats: stats needs field 'tokens' (list[str]) that split's output Sentence "
        "does not provide",
        "split → stats: stats needs field 'count' (int) but split's output Sentence provides "
        "it as str",
    ]
    assert [(m.upstream, m.downstream, m.field) for m in mismatches] == [
        ("split", "stats", "tokens"),
        ("split", "stats", "count"),
    ]
    assert mismatches[0].provided is None and mismatches[1].provided == "str"


def test_identical_models_and_subclass_are_compatible() -> None:
    """A model feeds itself and any of its base models without complaint."""

    class Richer(Stats):
        extra: float

    assert check_edge("a", Stats, "b", Stats) == []
    assert check_edge("a", Richer, "b", Stats) == []


def test_optional_consumer_field_may_be_missing() -> None:
    """An Input field with a default does not need to be provided."""
    consumer = model("In", id=str)
    consumer_with_default = type(
        "In2", (consumer,), {"__annotations__": {"note": str}, "note": "", "__module__": __name__}
    )
    assert check_edge("a", model("Out", id=str), "b", consumer_with_default) == []


@pytest.mark.parametrize(
    ("produced", "needed"),
    [
        (int, int),
        (int, Any),
        (int, object),
        (Any, int),
        (int, float),
        (bool, int),
        (bool, float),
        (str, bytes),
        (bytes, str),
        (int, int | None),
        (int, Optional[int]),
        (None, int | None),
        (int | None, int | None),
        (int | str, str | int | None),
        (bool | int, float),
        (Annotated[int, Field(gt=0)], int),
        (int, Annotated[float, "meta"]),
        (list[int], list[float]),
        (tuple[int, ...], list[int]),
        (set[str], list[str]),
        (list[str], set[str]),
        (list[str], frozenset[str]),
        (list[str], Sequence[str]),
        (tuple[int, str], tuple[int, str]),
        (tuple[int, int], list[int]),
        (list[list[int]], list[list[float]]),
        (dict[str, int], dict[str, float]),
        (dict[str, int], Mapping[str, int]),
        (Mapping[str, bool], dict[str, int]),
        (list, list[int]),  # an unparametrized list has Any elements
        (list[int], list),
        (dict, dict[str, str]),
        (Literal["a", "b"], Literal["a", "b", "c"]),
        (Literal["a"], str),
        (Literal[1, 2], float),
        (Literal[True], bool),
        (list[Literal["x"]], list[str]),
        (datetime.datetime, str),
        (uuid.UUID, str),
        (Decimal, str),
        (Color, str),
        (int, Decimal),
        (Decimal, float),
    ],
    ids=lambda t: type_name(t),
)
def test_compatible_types(produced: Any, needed: Any) -> None:
    """Values of the producer's type always validate as the consumer's type."""
    assert edge(produced, needed) == []


@pytest.mark.parametrize(
    ("produced", "needed"),
    [
        (str, int),
        (float, int),
        (int, str),
        (int, bool),
        (float, bool),
        (str, list[str]),  # a string is not a list of characters here
        (bytes, list[int]),
        (int | None, int),
        (Optional[str], str),
        (int | str, int),
        (None, int),
        (list[str], list[int]),
        (list[float], list[int]),
        (list[int], tuple[int, int]),
        (tuple[int, int, int], tuple[int, int]),
        (tuple[int, str], tuple[int, int]),
        (list[int], dict[str, int]),
        (dict[str, int], list[int]),
        (dict[str, str], dict[str, int]),
        (dict[int, int], dict[str, int]),
        (list[int], int),
        (Literal["a", "z"], Literal["a", "b"]),
        (str, Literal["a"]),
        (Literal["a"], int),
        (Annotated[float, "meta"], int),
        (list[int | None], list[int]),
        (str, datetime.datetime),
        (Decimal, int),
        (Level, str),  # an enum of ints is written as numbers
    ],
    ids=lambda t: type_name(t),
)
def test_incompatible_types(produced: Any, needed: Any) -> None:
    """A producer type that validates for only some values is one mismatch on that field."""
    mismatches = edge(produced, needed)
    assert len(mismatches) == 1
    assert mismatches[0].field == "x"
    assert mismatches[0].message == (
        f"up → down: down needs field 'x' ({type_name(needed)}) but up's output Out "
        f"provides it as {type_name(produced)}"
    )


@pytest.mark.parametrize(
    ("annotation", "name"),
    [
        (list[str], "list[str]"),
        (dict[str, float], "dict[str, float]"),
        (int | None, "int | None"),
        (Optional[int], "int | None"),
        (Union[int, str, None], "int | str | None"),
        (Stats, "Stats"),
        (list[Stats] | None, "list[Stats] | None"),
        (tuple[int, ...], "tuple[int, ...]"),
        (tuple[int, str], "tuple[int, str]"),
        (Sequence[int], "Sequence[int]"),
        (Literal["a", 1], "Literal['a', 1]"),
        (Annotated[int, "meta"], "int"),
        (Any, "Any"),
        (None, "None"),
    ],
)
def test_type_names_are_readable(annotation: Any, name: str) -> None:
    """Types in messages read as they would be written in Python."""
    assert type_name(annotation) == name


class Meta(BaseModel):
    source: str
    batch: int


class MetaOut(BaseModel):
    source: str
    batch: float


class RichMeta(Meta):
    extra: str = ""


def test_nested_model_subclass_is_compatible() -> None:
    """A nested model that subclasses the consumer's model is accepted as is."""
    assert edge(RichMeta, Meta) == []
    assert edge(list[RichMeta], list[Meta]) == []


def test_nested_model_structurally_equal_is_compatible() -> None:
    """Two distinct models with compatible fields match by structure, not by class."""
    other = model("OtherMeta", source=str, batch=int, more=list[int])
    assert edge(other, Meta) == []


def test_nested_model_mismatch_has_dotted_path() -> None:
    """A field inside a nested model is reported with its dotted path."""
    [mismatch] = edge(MetaOut, Meta)
    assert mismatch.field == "x.batch"
    assert mismatch.message == (
        "up → down: down needs field 'x.batch' (int) but up's output Out provides it as float"
    )


def test_nested_missing_field_names_the_inner_model() -> None:
    """A field missing in a nested model names the model it is missing from."""
    [mismatch] = edge(model("Partial", source=str), Meta)
    assert mismatch.field == "x.batch"
    assert mismatch.message == (
        "up → down: down needs field 'x.batch' (int) that up's output Out (in Partial) "
        "does not provide"
    )


def test_nested_models_in_containers_are_checked() -> None:
    """Models inside lists, dicts and optionals are compared field by field."""
    assert [m.field for m in edge(list[MetaOut], list[Meta])] == ["x[].batch"]
    assert [m.field for m in edge(dict[str, MetaOut], dict[str, Meta])] == ["x[].batch"]
    assert [m.field for m in edge(MetaOut | None, Meta | None)] == ["x.batch"]
    assert edge(Meta | None, Meta)[0].message.endswith("provides it as Meta | None")


def test_model_against_plain_types() -> None:
    """A model satisfies a str-keyed dict of compatible values, and nothing scalar."""
    assert edge(Meta, dict[str, Any]) == []
    assert edge(model("Nums", a=int, b=float), dict[str, float]) == []
    assert len(edge(Meta, dict[str, int])) == 1
    assert len(edge(Meta, str)) == 1
    assert len(edge(dict[str, Any], Meta)) == 1


def test_aliases_match_by_the_key_the_json_carries() -> None:
    """Fields match by the key the producer's JSON carries against the keys the consumer reads."""

    class Out(BaseModel):
        word_count: int = Field(serialization_alias="wordCount")

    class OutByAlias(BaseModel):
        model_config = ConfigDict(serialize_by_alias=True)
        word_count: int = Field(serialization_alias="wordCount")

    class InByAlias(BaseModel):
        count: int = Field(alias="wordCount")

    class InByValidationAlias(BaseModel):
        count: int = Field(validation_alias=AliasChoices("n", "wordCount"))

    class InByName(BaseModel):
        word_count: int

    # A model that does not serialize by alias writes its field names.
    assert check_edge("a", Out, "b", InByName) == []
    assert [m.field for m in check_edge("a", Out, "b", InByAlias)] == ["count"]
    # serialize_by_alias=True writes the aliases, which alias-reading consumers accept.
    assert check_edge("a", OutByAlias, "b", InByAlias) == []
    assert check_edge("a", OutByAlias, "b", InByValidationAlias) == []
    assert [m.field for m in check_edge("a", OutByAlias, "b", InByName)] == ["word_count"]
    # The caller can say how records are serialized, overriding the models' setting.
    assert check_edge("a", Out, "b", InByAlias, by_alias=True) == []
    assert check_edge("a", OutByAlias, "b", InByName, by_alias=False) == []


def test_nested_models_follow_their_own_alias_setting() -> None:
    """A nested producer model's own serialize_by_alias decides the keys inside it."""

    class Inner(BaseModel):
        model_config = ConfigDict(serialize_by_alias=True)
        value: int = Field(serialization_alias="v")

    class Wanted(BaseModel):
        v: int

    assert edge(Inner, Wanted) == []
    assert [m.field for m in edge(Inner, model("ByName", value=int))] == ["x.value"]


def test_consumer_alias_with_populate_by_name_accepts_the_field_name() -> None:
    """A consumer that populates by name accepts the producer's field name too."""

    class Out(BaseModel):
        count: int

    class Strict(BaseModel):
        n: int = Field(alias="count_alias")

    class ByName(BaseModel):
        model_config = ConfigDict(populate_by_name=True)
        count: int = Field(alias="countAlias")

    assert [m.field for m in check_edge("a", Out, "b", Strict)] == ["n"]
    assert check_edge("a", Out, "b", ByName) == []


def test_computed_fields_count_as_provided() -> None:
    """A computed field is in the producer's JSON, so it satisfies a consumer field."""

    class Out(BaseModel):
        text: str

        @computed_field  # type: ignore[prop-decorator]
        @property
        def length(self) -> int:
            return len(self.text)

    assert check_edge("a", Out, "b", model("In", length=int)) == []


def test_excluded_producer_fields_are_not_provided() -> None:
    """A producer field excluded from serialization cannot satisfy a consumer field."""

    class Out(BaseModel):
        secret: str = Field(exclude=True)

    assert [m.field for m in check_edge("a", Out, "b", model("In", secret=str))] == ["secret"]


def test_every_problem_is_reported() -> None:
    """All mismatching fields are listed, in the consumer's field order."""
    consumer = model("In", a=int, b=str, c=list[int], d=float)
    producer = model("Out", a=str, c=list[str], d=int)
    assert [m.field for m in check_edge("p", producer, "q", consumer)] == ["a", "b", "c"]


def test_seed_chain_is_compatible() -> None:
    """The seed plugin's stages fit together, and not in the wrong order."""
    from stageflow_seed import Analyzer, Collector, Preprocessor

    assert check_edge("p", Preprocessor.Output, "a", Analyzer.Input) == []
    assert check_edge("a", Analyzer.Output, "c", Collector.Input) == []
    wrong = check_edge("p", Preprocessor.Output, "c", Collector.Input)
    assert {m.field for m in wrong} >= {"mean", "variance", "trend"}


class Tree(BaseModel):
    label: str
    children: list[Tree] = []


class OtherTree(BaseModel):
    label: str
    children: list[OtherTree]


class NumberTree(BaseModel):
    label: int
    children: list[NumberTree]


def test_recursive_models_terminate() -> None:
    """Self-referencing models are compared structurally without endless recursion."""
    assert edge(OtherTree, Tree) == []
    assert [m.field for m in edge(NumberTree, Tree)] == ["x.label"]
