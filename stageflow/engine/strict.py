"""Values JSON cannot carry faithfully: caught instead of silently changed.

Two holes between Python's JSON and the standard:

- Python's ``json`` module, and pydantic-core's parser, accept the literals ``NaN``,
  ``Infinity`` and ``-Infinity``; the JSON standard does not. :func:`nonstandard_json`
  finds them in an input line, so the line is dead-lettered as invalid JSON.
- pydantic writes a float that is nan or infinite as ``null``. :func:`non_finite_field`
  finds such a float in an Output, so the record is dead-lettered instead of written with a
  value changed.

Both are built to cost nothing on records they have nothing to say about: the input check
runs the strict parser only on lines holding ``NaN`` or ``Infinity`` at all, and the output
check only looks at a model whose serialised form holds ``null`` and whose class can hold a
float (:func:`may_hold_floats`).
"""

from __future__ import annotations

import datetime
import enum
import math
import types
import typing
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from decimal import Decimal
from functools import partial
from itertools import chain
from operator import attrgetter, is_not
from pathlib import PurePath
from typing import Any

from pydantic import BaseModel
from pydantic_core import from_json

__all__ = [
    "finite_slice_test",
    "holds_null",
    "may_hold_floats",
    "non_finite_field",
    "nonstandard_json",
]

# Plain types whose values never are, nor contain, a float (int covers bool).
_NO_FLOATS = (
    str,
    bytes,
    int,
    enum.Enum,
    datetime.date,
    datetime.time,
    datetime.timedelta,
    uuid.UUID,
    Decimal,
    PurePath,
    type(None),
)


def nonstandard_json(record: bytes) -> str | None:
    """Why ``record`` parses only as non-standard JSON (NaN/Infinity), or None if it does not."""
    # find, not `in`: see StageRunner.dump.
    if record.find(b"NaN") < 0 and record.find(b"Infinity") < 0:
        return None
    try:
        from_json(record, allow_inf_nan=False)
    except ValueError as strict:
        try:
            from_json(record)
        except ValueError:
            return None  # invalid in other ways too; validation names the first problem
        return f"{strict} (NaN, Infinity and -Infinity are not JSON; write a number or null)"
    return None  # the words are inside strings


def may_hold_floats(model: type[BaseModel]) -> bool:
    """Whether an instance of ``model`` can contain a float anywhere, as far as types tell."""
    return _annotation_floats(model, set())


def non_finite_field(value: Any, path: str = "") -> tuple[str, float] | None:
    """The dotted path and value of the first nan or infinite float inside ``value``."""
    if isinstance(value, float):
        return None if math.isfinite(value) else (path or "(the value)", value)
    if isinstance(value, BaseModel):
        names = [*type(value).model_fields, *type(value).model_computed_fields]
        items: Any = ((name, getattr(value, name, None)) for name in names)
    elif isinstance(value, Mapping):
        items = value.items()
    elif isinstance(value, (list, tuple, set, frozenset)):
        items = enumerate(value)
    else:
        return None
    for key, inner in items:
        found = non_finite_field(inner, f"{path}.{key}" if path else str(key))
        if found is not None:
            return found
    return None


def finite_slice_test(model: type[BaseModel]) -> Callable[[Sequence[BaseModel]], bool] | None:
    """A quick test that every float of a slice of instances of ``model`` is finite, at C
    speed (the values of their plain float fields gathered and looked at in one pass); None
    when the model's floats are not all in plain fields (``float``, ``float | None``, a list
    or tuple of floats) for such a test to find.

    Inside a fused group this spares serialising each Output to JSON only to look for a
    null; a False (or a value of another type) sends the caller to the full check, which
    names the field.
    """
    fields = _plain_float_fields(model)
    return None if fields is None else _all_finite(*fields)


def holds_null(texts: Sequence[bytes]) -> bool:
    """Whether any of ``texts``, the JSON of objects, holds a null: where a nan or infinite
    float may have been written (pydantic writes them as null)."""
    # Joined, one search for them all: an object's JSON starts with { and ends with }, so a
    # null found is a null inside one. find, not `in`: see StageRunner.refuse_nulled_floats.
    return b"".join(texts).find(b"null") >= 0


def _plain_float_fields(model: type[BaseModel]) -> tuple[list[str], list[str]] | None:
    """The model's fields of one float (or None) and of a list or tuple of floats; None when
    some float lies elsewhere (another field type, extra or computed fields)."""
    if model.model_config.get("extra") == "allow" or model.model_computed_fields:
        return None
    single: list[str] = []
    many: list[str] = []
    for name, info in model.model_fields.items():
        annotation = info.annotation
        if not _annotation_floats(annotation, set()):
            continue
        origin, args = typing.get_origin(annotation), typing.get_args(annotation)
        if annotation is float or (
            origin in (typing.Union, types.UnionType) and set(args) == {float, type(None)}
        ):
            single.append(name)
        elif (origin is list and args == (float,)) or (origin is tuple and args == (float, ...)):
            many.append(name)
        else:
            return None
    return single, many


def _all_finite(single: list[str], many: list[str]) -> Callable[[Sequence[BaseModel]], bool]:
    """Whether every value of fields ``single`` and every item of fields ``many`` is finite
    (or None in a single field), over a sequence of instances."""
    isfinite = math.isfinite

    def values(names: list[str], outputs: Sequence[BaseModel]) -> Iterable[Any]:
        if not names:
            return ()
        if len(names) == 1:
            return map(attrgetter(names[0]), outputs)
        return chain.from_iterable(map(attrgetter(*names), outputs))

    def test(outputs: Sequence[BaseModel]) -> bool:
        try:
            return all(map(isfinite, filter(_not_none, values(single, outputs)))) and all(
                map(isfinite, chain.from_iterable(values(many, outputs)))
            )
        except TypeError:  # not a number after all: let the full check look
            return False

    return test


_not_none = partial(is_not, None)


def _annotation_floats(annotation: Any, seen: set[type[BaseModel]]) -> bool:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        if annotation in seen:
            return False
        seen.add(annotation)
        annotations = [info.annotation for info in annotation.model_fields.values()]
        annotations += [c.return_type for c in annotation.model_computed_fields.values()]
        return any(_annotation_floats(inner, seen) for inner in annotations)
    if isinstance(annotation, type):
        return not issubclass(annotation, _NO_FLOATS)
    args = typing.get_args(annotation)
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _annotation_floats(args[0], seen)
    if origin is typing.Literal:
        return any(isinstance(arg, float) for arg in args)
    if args:
        return any(_annotation_floats(arg, seen) for arg in args)
    return annotation is not None  # Any, a TypeVar, a forward reference: may hold anything
