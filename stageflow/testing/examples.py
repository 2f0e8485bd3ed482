"""Sample records for property tests, built by hypothesis from a model's fields and constraints.

hypothesis is an optional dependency (``pip install 'stageflow[testing]'``); only
:func:`examples_for` needs it. Each field's strategy is hypothesis's ``from_type`` of its
annotation with its pydantic constraints (``Field(ge=1)``, ``min_length`` ...), except where
``from_type`` has nothing to offer: ``Any`` becomes any JSON value, and nested models are
built field by field the same way.
"""

from __future__ import annotations

import types
import typing
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

from pydantic import BaseModel, ValidationError

from stageflow.errors import StageflowError

if TYPE_CHECKING:
    from hypothesis.strategies import SearchStrategy

__all__ = ["examples_for"]

M = TypeVar("M", bound=BaseModel)


def examples_for(model: type[M], n: int = 10, *, seed: int = 0) -> list[M]:
    """``n`` distinct valid instances of ``model``, the same ones for the same ``seed``.

    Each example survives the trip a record makes between stages (serialised to JSON and
    validated again), so it can be fed to :func:`~stageflow.testing.run_stage` as it is.
    Fewer than ``n`` come back only when hypothesis cannot find that many distinct ones.
    Call it outside ``@given`` tests; inside one, draw from ``model_strategy(model)``.
    """
    try:
        from hypothesis import HealthCheck, Phase, given, settings
        from hypothesis import seed as hypothesis_seed
        from hypothesis.errors import Unsatisfiable
    except ImportError:
        raise StageflowError(
            "examples_for needs hypothesis; install it with pip install 'stageflow[testing]'"
        ) from None
    found: dict[str, M] = {}

    @hypothesis_seed(seed)
    @settings(
        max_examples=n * 3,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
        deadline=None,
    )
    @given(model_strategy(model))
    def collect(item: M) -> None:
        if len(found) < n:
            found.setdefault(item.model_dump_json(), item)

    try:
        collect()
    except Unsatisfiable:
        raise StageflowError(
            f"no valid {model.__name__} survives the trip between stages (serialised, then "
            "validated again); check its aliases (serialize_by_alias) and custom serializers"
        ) from None
    return list(found.values())


def model_strategy(model: type[M]) -> SearchStrategy[M]:
    """A hypothesis strategy of valid ``model`` instances that survive a JSON round trip."""
    from hypothesis import strategies as st

    # Keyed as a record on the wire would be: by alias where the field has one.
    fields = {
        info.alias if isinstance(info.alias, str) else name: _strategy(_constrained(info))
        for name, info in model.model_fields.items()
    }

    to_json = model.__pydantic_serializer__.to_json  # what the engine writes between stages

    def build(values: dict[str, Any]) -> M | None:
        try:
            item = model.model_validate(values)
            model.model_validate_json(to_json(item))
        except (ValidationError, ValueError):
            return None
        return item

    built: SearchStrategy[Any] = st.fixed_dictionaries(fields).map(build)
    return built.filter(_is_not_none)


def _is_not_none(item: object) -> bool:
    return item is not None


def _constrained(info: Any) -> Any:
    annotation = info.annotation
    return Annotated[annotation, *info.metadata] if info.metadata else annotation


def _strategy(annotation: Any) -> SearchStrategy[Any]:
    from hypothesis import strategies as st

    if annotation is Any:
        scalars = st.none() | st.booleans() | st.integers() | st.text(max_size=8)
        return st.recursive(
            scalars,
            lambda inner: (
                st.lists(inner, max_size=3)
                | st.dictionaries(st.text(max_size=5), inner, max_size=3)
            ),
            max_leaves=6,
        )
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return model_strategy(annotation)
    if not _needs_help(annotation):
        return st.from_type(annotation)
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is Annotated:
        return _strategy(args[0])
    if origin in (typing.Union, types.UnionType):
        return st.one_of([_strategy(arg) for arg in args])
    if origin in (dict, typing.get_origin(typing.Mapping[str, int])):
        return st.dictionaries(_strategy(args[0]), _strategy(args[1]), max_size=4)
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return st.lists(_strategy(args[0]), max_size=4).map(tuple)
    if origin is tuple:
        return st.tuples(*(_strategy(arg) for arg in args))
    if origin in (set, frozenset):
        return st.lists(_strategy(args[0]), max_size=4).map(origin)
    return st.lists(_strategy(args[0]) if args else _strategy(Any), max_size=4)


def _needs_help(annotation: Any) -> bool:
    """Whether ``from_type`` would meet ``Any`` or a pydantic model inside ``annotation``."""
    if annotation is Any:
        return True
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return True
    return any(_needs_help(arg) for arg in typing.get_args(annotation) if arg is not Ellipsis)
