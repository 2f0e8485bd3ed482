"""Static compatibility of one stage's Output with the next stage's Input.

The question :func:`check_edge` answers: will every record the upstream stage can emit, once
serialized to JSON, validate against the downstream stage's Input model? It answers from the
type annotations alone, before any worker starts, and errs on the side of "yes" only where
an annotation is too dynamic to reason about (``Any``, type variables, forward references
that never resolved).

The rules, for a value the producer declares as ``P`` and the consumer needs as ``C``:

* ``C`` is ``Any`` or ``object``: anything goes. ``P`` is ``Any``: nothing can be proven
  wrong, so it is accepted too.
* ``Annotated[X, ...]`` is read as ``X``.
* ``P`` a union (``int | None``): *every* member the producer can emit must be acceptable.
  ``C`` a union: ``P`` must be acceptable to at least one member.
* Plain classes: ``P`` a subclass of ``C``; and the JSON widenings pydantic always accepts:
  ``bool`` → ``int`` → ``float`` (and ``Decimal``), ``str`` ↔ ``bytes`` (bytes travel as
  text), and types written as JSON strings (datetimes, UUIDs, paths, ``Decimal``, enums of
  strings) → ``str``. Narrowing (``float`` → ``int``, ``str`` → ``int``, ``str`` →
  ``datetime``) is refused: it validates for some values only.
* ``Literal``: the producer's values must be a subset of the consumer's, or all be instances
  of the consumer's plain type.
* ``list``/``tuple``/``set``/``frozenset``/``Sequence`` become JSON arrays, so any of them
  satisfies any of them when the element types are compatible; a fixed-length tuple needs a
  fixed-length tuple of the same length. ``dict``/``Mapping`` compare keys and values.
  ``str`` is never taken for a sequence.
* Nested models: a subclass is fine; otherwise the consumer model's fields are checked
  against the producer model's, recursively, and problems carry a dotted path
  (``meta.source``; ``[]`` marks the elements of an array or the values of a mapping).

Fields are matched by the key the JSON carries: the producer's field name, or its
serialization alias when the producer model serializes by alias (``serialize_by_alias=True``
in its ``model_config``, which the engine's serializer honours). The consumer accepts a key
under its validation alias, its alias, or its field name when ``populate_by_name`` /
``validate_by_name`` allows it. Consumer fields with a default may be missing upstream.
"""

from __future__ import annotations

import collections.abc as cabc
import datetime
import types
import typing
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from enum import Enum
from pathlib import PurePath
from typing import Annotated, Any, Literal, Union

from pydantic import AliasChoices, AliasPath, BaseModel

__all__ = ["Mismatch", "check_edge", "describe", "type_name"]


@dataclass(frozen=True)
class Mismatch:
    """One Input field of ``downstream`` that ``upstream``'s Output cannot satisfy.

    ``field`` is the dotted path of the field in the downstream Input model; ``needed`` and
    ``provided`` are readable type names (``provided`` is None when the field is missing).
    """

    upstream: str
    downstream: str
    field: str
    message: str
    needed: str = ""
    provided: str | None = None

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class _Problem:
    path: tuple[str, ...]
    needed: Any
    provided: Any  # _MISSING when the producer has no such field
    owner: type[BaseModel] | None = None  # the producer model the field is missing from


@dataclass
class _Context:
    by_alias: bool | None
    active: set[tuple[type[BaseModel], type[BaseModel]]] = field(default_factory=set)


_MISSING: Any = object()
_ARRAYS = (
    list,
    tuple,
    set,
    frozenset,
    cabc.Sequence,
    cabc.MutableSequence,
    cabc.Set,
    cabc.MutableSet,
    cabc.Collection,
    cabc.Iterable,
)
_MAPPINGS = (dict, cabc.Mapping, cabc.MutableMapping)
_WIDENINGS = {
    (bool, int),
    (bool, float),
    (int, float),
    (bool, Decimal),
    (int, Decimal),
    (float, Decimal),
    (Decimal, float),  # written as a numeric string, which float fields accept
    (str, bytes),
    (bytes, str),
}
# Types pydantic writes to JSON as strings, which any str (or bytes) field then accepts.
_JSON_STRINGS = (
    datetime.datetime,
    datetime.date,
    datetime.time,
    datetime.timedelta,
    uuid.UUID,
    Decimal,
    PurePath,
    Enum,  # only when its values are strings; checked below
)


def check_edge(
    upstream: str,
    output: type[BaseModel],
    downstream: str,
    input_: type[BaseModel],
    *,
    by_alias: bool | None = None,
) -> list[Mismatch]:
    """Return one :class:`Mismatch` per Input field the upstream Output cannot satisfy.

    ``by_alias`` says whether the producer's records are serialized under their
    serialization aliases (True) or their field names (False); None, the default, follows
    each producer model's ``serialize_by_alias`` setting, as the engine's serializer does.
    """
    mismatches = []
    for problem in _check_models(output, input_, _Context(by_alias)):
        path = _join(problem.path)
        needed = type_name(problem.needed)
        if problem.provided is _MISSING:
            owner = problem.owner or output
            where = f"{upstream}'s output {output.__name__}"
            if owner is not output:
                where += f" (in {owner.__name__})"
            message = (
                f"{upstream} → {downstream}: {downstream} needs field {path!r} ({needed}) "
                f"that {where} does not provide"
            )
            provided = None
        else:
            provided = type_name(problem.provided)
            message = (
                f"{upstream} → {downstream}: {downstream} needs field {path!r} ({needed}) "
                f"but {upstream}'s output {output.__name__} provides it as {provided}"
            )
        mismatches.append(Mismatch(upstream, downstream, path, message, needed, provided))
    return mismatches


def describe(mismatches: cabc.Sequence[Mismatch]) -> str:
    """Every mismatch in one line, each edge named once: ``a → b: b needs ...; b needs ...``."""
    by_edge: dict[tuple[str, str], list[Mismatch]] = {}
    for mismatch in mismatches:
        by_edge.setdefault((mismatch.upstream, mismatch.downstream), []).append(mismatch)
    edges = []
    for (upstream, downstream), edge in by_edge.items():
        prefix = f"{upstream} → {downstream}: "
        edges.append(prefix + "; ".join(m.message.removeprefix(prefix) for m in edge))
    return "; ".join(edges)


def type_name(annotation: Any) -> str:
    """A readable name for a type annotation: ``list[str]``, ``int | None``, ``Model``."""
    annotation = _unwrap(annotation)
    if annotation is Any:
        return "Any"
    if annotation is None or annotation is type(None):
        return "None"
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is Union or origin is types.UnionType:
        return " | ".join(type_name(arg) for arg in args)
    if origin is Literal:
        return f"Literal[{', '.join(repr(arg) for arg in args)}]"
    if origin is not None:
        base = getattr(origin, "__name__", None) or str(origin).replace("typing.", "")
        if not args:
            return str(base)
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            return f"tuple[{type_name(args[0])}, ...]"
        return f"{base}[{', '.join(type_name(arg) for arg in args)}]"
    if isinstance(annotation, typing.ForwardRef):
        return annotation.__forward_arg__
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def _join(path: tuple[str, ...]) -> str:
    text = ""
    for part in path:
        text += part if part == "[]" or not text else f".{part}"
    return text


def _unwrap(annotation: Any) -> Any:
    while typing.get_origin(annotation) is Annotated:
        annotation = typing.get_args(annotation)[0]
    if isinstance(annotation, typing.TypeAliasType if hasattr(typing, "TypeAliasType") else ()):
        return _unwrap(annotation.__value__)
    if isinstance(annotation, typing.NewType):
        return _unwrap(annotation.__supertype__)
    return annotation


def _producer_fields(model: type[BaseModel], by_alias: bool | None) -> dict[str, Any]:
    """Map every key the producer's JSON carries to the annotation of its value."""
    if by_alias is None:
        by_alias = bool(model.model_config.get("serialize_by_alias", False))
    fields: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        if info.exclude:
            continue
        alias = info.serialization_alias if by_alias else None
        fields[alias or name] = info.annotation
    for name, computed in model.model_computed_fields.items():
        alias = computed.alias if by_alias else None
        fields[alias or name] = computed.return_type
    return fields


def _consumer_keys(model: type[BaseModel], name: str) -> list[str]:
    """The top-level JSON keys under which the consumer model accepts field ``name``."""
    info = model.model_fields[name]
    config = model.model_config
    by_name = bool(config.get("populate_by_name") or config.get("validate_by_name"))
    by_alias = config.get("validate_by_alias", True)
    keys: list[str] = []
    if by_alias:
        alias = info.validation_alias if info.validation_alias is not None else info.alias
        choices = alias.choices if isinstance(alias, AliasChoices) else [alias]
        for choice in choices:
            if isinstance(choice, str):
                keys.append(choice)
            elif isinstance(choice, AliasPath) and choice.path and isinstance(choice.path[0], str):
                # A path into a nested object: only its first key can be checked statically.
                keys.append(choice.path[0])
    if by_name or not keys:
        keys.append(name)
    return keys


def _check_models(
    producer: type[BaseModel], consumer: type[BaseModel], ctx: _Context
) -> list[_Problem]:
    if issubclass(producer, consumer) or (producer, consumer) in ctx.active:
        return []  # a recursive model pair already being compared: assume it fits
    ctx.active.add((producer, consumer))
    try:
        return _compare_fields(producer, consumer, ctx)
    finally:
        ctx.active.discard((producer, consumer))


def _compare_fields(
    producer: type[BaseModel], consumer: type[BaseModel], ctx: _Context
) -> list[_Problem]:
    provided = _producer_fields(producer, ctx.by_alias)
    problems: list[_Problem] = []
    for name, info in consumer.model_fields.items():
        keys = _consumer_keys(consumer, name)
        found = next((key for key in keys if key in provided), None)
        if found is None:
            if info.is_required():
                problems.append(_Problem((name,), info.annotation, _MISSING, producer))
            continue
        inner = info.annotation
        alias = info.validation_alias
        if isinstance(alias, AliasPath) and len(alias.path) > 1 and alias.path[0] == found:
            continue  # the value sits deeper inside the provided one; not statically known
        for problem in _check(provided[found], inner, ctx):
            problems.append(
                _Problem((name, *problem.path), problem.needed, problem.provided, problem.owner)
            )
    return problems


def _check(produced: Any, needed: Any, ctx: _Context) -> list[_Problem]:
    """Problems with feeding values of type ``produced`` to a field of type ``needed``.

    An empty list means compatible. A problem with an empty path is a mismatch of the two
    types themselves; longer paths point inside nested models.
    """
    p = _unwrap(produced)
    c = _unwrap(needed)
    mismatch = [_Problem((), needed, produced)]
    if c is Any or c is object or p is Any or p == c:
        return []
    if isinstance(p, (typing.TypeVar, typing.ForwardRef, str)) or isinstance(
        c, (typing.TypeVar, typing.ForwardRef, str)
    ):
        return []  # unresolved: nothing can be proven
    p_origin, c_origin = typing.get_origin(p), typing.get_origin(c)

    if _is_union(p_origin):
        nested: list[_Problem] = []
        for member in typing.get_args(p):
            problems = _check(member, c, ctx)
            if any(not problem.path for problem in problems):
                return mismatch
            nested.extend(problem for problem in problems if problem not in nested)
        return nested
    if _is_union(c_origin):
        detailed: list[_Problem] | None = None
        for member in typing.get_args(c):
            problems = _check(p, member, ctx)
            if not problems:
                return []
            if all(pr.path for pr in problems) and _is_model(_unwrap(member)):
                detailed = problems  # same shape, different fields: say which
        return detailed or mismatch

    if p is None or p is type(None):
        return [] if c is None or c is type(None) else mismatch
    if c is None or c is type(None):
        return mismatch

    if p_origin is Literal:
        values = typing.get_args(p)
        if c_origin is Literal:
            return [] if set(values) <= set(typing.get_args(c)) else mismatch
        return [] if all(not _check(type(v), c, ctx) for v in values) else mismatch
    if c_origin is Literal:
        return mismatch

    if _is_model(c):
        if _is_model(p):
            return _check_models(p, c, ctx)
        return mismatch
    if _is_model(p):
        if _is_mapping(c_origin or c):
            key_type, value_type = _mapping_args(c)
            if _check(str, key_type, ctx):
                return mismatch
            fields = _producer_fields(p, ctx.by_alias)
            fits = all(not _check(t, value_type, ctx) for t in fields.values())
            return [] if fits else mismatch
        return mismatch

    if _is_mapping(c_origin or c):
        if not _is_mapping(p_origin or p):
            return mismatch
        (pk, pv), (ck, cv) = _mapping_args(p), _mapping_args(c)
        if _check(pk, ck, ctx):
            return mismatch
        return _nested(_check(pv, cv, ctx), needed, produced)

    if _is_array(c_origin or c):
        if not _is_array(p_origin or p):
            return mismatch
        c_items, c_fixed = _array_args(c)
        p_items, p_fixed = _array_args(p)
        if c_fixed:
            if not p_fixed or len(p_items) != len(c_items):
                return mismatch
            problems = []
            for p_item, c_item in zip(p_items, c_items, strict=False):
                problems.extend(_check(p_item, c_item, ctx))
            return _nested(problems, needed, produced)
        problems = []
        for p_item in p_items:
            problems.extend(_check(p_item, c_items[0], ctx))
        return _nested(problems, needed, produced)

    if p_origin is not None or c_origin is not None:
        # Other generics (type[X], Callable, ...): same origin and pairwise-compatible arguments.
        if p_origin is None or c_origin is None:
            return mismatch
        if not (isinstance(p_origin, type) and isinstance(c_origin, type)):
            return [] if p_origin == c_origin else mismatch
        if not issubclass(p_origin, c_origin):
            return mismatch
        p_args, c_args = typing.get_args(p), typing.get_args(c)
        if len(p_args) != len(c_args):
            return []
        problems = []
        for p_arg, c_arg in zip(p_args, c_args, strict=False):
            problems.extend(_check(p_arg, c_arg, ctx))
        return mismatch if problems else []

    if isinstance(p, type) and isinstance(c, type):
        if issubclass(p, c) or (p, c) in _WIDENINGS:
            return []
        if c in (str, bytes) and _is_json_string(p):
            return []
        return mismatch
    return []  # a construct this checker does not model: do not block the pipeline on it


def _nested(problems: list[_Problem], needed: Any, produced: Any) -> list[_Problem]:
    """Report element problems inside the container, or the container as a whole."""
    if not problems:
        return []
    if any(not problem.path for problem in problems):
        return [_Problem((), needed, produced)]
    return [
        _Problem(("[]", *problem.path), problem.needed, problem.provided, problem.owner)
        for problem in problems
    ]


def _is_json_string(tp: type) -> bool:
    if issubclass(tp, Enum):
        return all(isinstance(member.value, str) for member in tp)
    return issubclass(tp, _JSON_STRINGS)


def _is_union(origin: Any) -> bool:
    return origin is Union or origin is types.UnionType


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _is_mapping(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, _MAPPINGS)


def _is_array(tp: Any) -> bool:
    return (
        isinstance(tp, type)
        and issubclass(tp, _ARRAYS)
        and not issubclass(tp, (str, bytes, bytearray))
        and not issubclass(tp, _MAPPINGS)
    )


def _mapping_args(tp: Any) -> tuple[Any, Any]:
    args = typing.get_args(tp)
    return (args[0], args[1]) if len(args) == 2 else (Any, Any)


def _array_args(tp: Any) -> tuple[tuple[Any, ...], bool]:
    """The element types of an array type, and whether it is a fixed-length tuple."""
    origin = typing.get_origin(tp) or tp
    args = typing.get_args(tp)
    if origin is tuple:
        if not args:
            return (Any,), False
        if len(args) == 2 and args[1] is Ellipsis:
            return (args[0],), False
        if args == ((),):
            return (), True
        return args, True
    return (args[0] if args else Any,), False
