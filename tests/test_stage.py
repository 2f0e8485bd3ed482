"""The stage contract: class checks and how process()/finish() results become records."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pydantic import BaseModel

import stageflow
from stageflow.errors import PluginError
from stageflow.stage import iter_outputs


class Item(BaseModel):
    id: str


class Settings(BaseModel):
    factor: int = 2


def make_stage(**attrs: object) -> type[stageflow.Stage]:
    """A Stage subclass with a working process() and the given class attributes."""
    namespace: dict[str, object] = {
        "name": "good",
        "Input": Item,
        "Output": Item,
        "process": lambda self, item: item,
        "__module__": __name__,
    }
    namespace.update(attrs)
    return type("Custom", (stageflow.Stage,), {k: v for k, v in namespace.items() if v is not ...})


def test_valid_stage_passes() -> None:
    """A stage with name, Input, Output and process() passes check_definition."""
    make_stage().check_definition()
    make_stage(Config=Settings).check_definition()


@pytest.mark.parametrize(
    ("attrs", "message"),
    [
        ({"name": ...}, "needs a non-empty string `name` attribute"),
        ({"name": ""}, "needs a non-empty string `name` attribute"),
        ({"name": 3}, "needs a non-empty string `name` attribute"),
        ({"Input": ...}, "needs `Input` set to a pydantic BaseModel subclass"),
        ({"Input": dict}, "needs `Input` set to a pydantic BaseModel subclass"),
        ({"Output": Item(id="x")}, "needs `Output` set to a pydantic BaseModel subclass"),
        ({"Config": dict}, "has a `Config` that is not a pydantic BaseModel subclass"),
        ({"process": ...}, "must define process(self, item)"),
    ],
)
def test_check_definition_errors(attrs: dict[str, object], message: str) -> None:
    """Each broken part of a stage class is a PluginError naming the class and the part."""
    with pytest.raises(PluginError) as info:
        make_stage(**attrs).check_definition()
    assert message in str(info.value)
    assert f"{__name__}.Custom" in str(info.value)


def test_config_defaults_from_config_model() -> None:
    """Without a config the Config model's defaults are used; a given config is kept."""
    stage_cls = make_stage(Config=Settings)
    assert stage_cls().config == Settings()
    assert stage_cls(Settings(factor=5)).config == Settings(factor=5)
    assert make_stage()().config is None


def test_default_hooks() -> None:
    """setup() and finish() do nothing by default; the base process() refuses to run."""
    stage = make_stage()()
    assert stage.setup() is None
    assert stage.finish() is None
    with pytest.raises(NotImplementedError, match="must define process"):
        stageflow.Stage.process(stage, Item(id="a"))


def test_iter_outputs_none_drops() -> None:
    """None means the record is dropped: no outputs."""
    assert list(iter_outputs(None)) == []


def test_iter_outputs_single_model() -> None:
    """A single model (or dict) is one output, not iterated over its fields."""
    item = Item(id="a")
    assert list(iter_outputs(item)) == [item]
    assert list(iter_outputs({"id": "b"})) == [{"id": "b"}]


def test_iter_outputs_list() -> None:
    """A list yields each element; an empty list yields nothing."""
    items = [Item(id="a"), Item(id="b")]
    assert list(iter_outputs(items)) == items
    assert list(iter_outputs([])) == []


def test_iter_outputs_generator() -> None:
    """A generator is consumed lazily, element by element."""
    produced: list[str] = []

    def gen() -> Iterator[Item]:
        for key in "xyz":
            produced.append(key)
            yield Item(id=key)

    outputs = iter_outputs(gen())
    assert produced == []
    assert next(outputs) == Item(id="x")
    assert produced == ["x"]
    assert [o.id for o in outputs] == ["y", "z"]


def test_iter_outputs_string_is_one_record() -> None:
    """A str or bytes result is a single record, not a sequence of characters."""
    assert list(iter_outputs("abc")) == ["abc"]
    assert list(iter_outputs(b"abc")) == [b"abc"]
