"""The stage contract: what a plugin author subclasses.

A stage turns records of its ``Input`` model into records of its ``Output`` model. The
engine builds one instance per worker process, calls :meth:`Stage.setup` once, then
:meth:`Stage.process` for every record, then :meth:`Stage.finish` once at the end of the
stream.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, ClassVar

from pydantic import BaseModel

from stageflow.errors import PluginError

__all__ = ["Stage", "iter_outputs"]


class Stage:
    """Base class of every stage.

    Subclasses set four class attributes:

    ``name``
        The name pipeline files use in ``uses:``.
    ``Input``
        The pydantic model every incoming record is validated against.
    ``Output``
        The pydantic model :meth:`process` returns or yields.
    ``Config``
        Optional pydantic model for the stage's ``config:`` block; the validated instance
        is ``self.config``.
    ``stateful``
        Optional; True when :meth:`process` keeps state across records (a dedup cache, a
        running total), so the engine never fuses the stage with a neighbour. Left unset,
        a stage is stateful when it overrides :meth:`finish`; set it to False when its
        finish() only does per-process work (closing a connection, logging), so that the
        stage may be fused although it has one.
    """

    name: ClassVar[str]
    Input: ClassVar[type[BaseModel]]
    Output: ClassVar[type[BaseModel]]
    Config: ClassVar[type[BaseModel] | None] = None
    stateful: ClassVar[bool | None] = None

    def __init__(self, config: BaseModel | None = None) -> None:
        if config is None and self.Config is not None:
            config = self.Config()
        self.config = config

    def setup(self) -> None:
        """Prepare the worker; called once per worker process before the first record."""

    def process(self, item: Any) -> Any:
        """Turn one Input record into an Output, None (drop it) or an iterable of Outputs."""
        raise NotImplementedError(f"stage {self.name!r} must define process(self, item)")

    def finish(self) -> Any:
        """Called once per worker at the end of the stream; may return or yield Outputs."""
        return None

    def snapshot(self) -> bytes | BaseModel:
        """The worker's state, as bytes or a model; override with :meth:`restore`.

        A stateful stage with both hooks survives the death of its own workers: the engine
        keeps the latest snapshot of each worker and gives it to the replacement.
        """
        raise NotImplementedError(f"stage {self.name!r} does not define snapshot()")

    def restore(self, state: bytes) -> None:
        """Take back the state :meth:`snapshot` returned (a model arrives as its JSON)."""
        raise NotImplementedError(f"stage {self.name!r} does not define restore()")

    @classmethod
    def has_snapshots(cls) -> bool:
        """Whether the class overrides both snapshot() and restore()."""
        return cls.snapshot is not Stage.snapshot and cls.restore is not Stage.restore

    @classmethod
    def check_definition(cls) -> None:
        """Raise :class:`PluginError` when the class breaks the stage contract."""
        where = f"{cls.__module__}.{cls.__qualname__}"
        name = cls.__dict__.get("name", getattr(cls, "name", None))
        if not isinstance(name, str) or not name:
            raise PluginError(f"stage class {where} needs a non-empty string `name` attribute")
        for attr in ("Input", "Output"):
            model = getattr(cls, attr, None)
            if not (isinstance(model, type) and issubclass(model, BaseModel)):
                raise PluginError(
                    f"stage {name!r} ({where}) needs `{attr}` set to a pydantic BaseModel subclass"
                )
        config = cls.Config
        if config is not None and not (isinstance(config, type) and issubclass(config, BaseModel)):
            raise PluginError(
                f"stage {name!r} ({where}) has a `Config` that is not a pydantic BaseModel subclass"
            )
        if cls.process is Stage.process:
            raise PluginError(f"stage {name!r} ({where}) must define process(self, item)")


def iter_outputs(result: Any) -> Iterator[Any]:
    """Normalise what process() or finish() returned into an iterator of records.

    None yields nothing, a single model (or dict) yields itself, anything else iterable
    (a list, a generator) yields its items.
    """
    if result is None:
        return iter(())
    if isinstance(result, (BaseModel, dict)):
        return iter((result,))
    if isinstance(result, Iterable) and not isinstance(result, (str, bytes)):
        return iter(result)
    return iter((result,))
