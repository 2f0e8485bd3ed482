"""How a worker gets its stage class: by name, or by value when no name would find it.

A class in an installed or importable module travels as ``module:QualName`` and the worker
imports it. A class a worker could not import by name, one defined in ``__main__`` (a
script, ``python -`` on stdin, a Jupyter or IPython cell) or inside a function, travels by
value: pickled with cloudpickle, which also carries the models and helpers it uses from the
same place, and put base64-encoded into the worker's settings. The settings reach the
worker over the parent's own pipe (its stdin, or a launcher's equivalent), never over a
data socket, and data frames stay JSON: nothing a peer sends is ever unpickled.
"""

from __future__ import annotations

import base64
import importlib
import pickle
import weakref
from collections.abc import Iterable
from typing import Any

from stageflow.stage import Stage

__all__ = ["by_value", "load_stage_class", "modules", "stage_settings"]

#: The settings key holding a class shipped by value.
PICKLED = "stage_pickle"

_pickled: weakref.WeakKeyDictionary[type[Stage], str] = weakref.WeakKeyDictionary()


def by_value(cls: type[Stage]) -> bool:
    """Whether a worker could not import ``cls`` by its name and needs it by value."""
    return cls.__module__ == "__main__" or "<locals>" in cls.__qualname__


def modules(classes: Iterable[type[Stage]]) -> list[str]:
    """The modules workers import these stage classes from (what a fork server preloads);
    a class travelling by value has none."""
    return list(dict.fromkeys(cls.__module__ for cls in classes if not by_value(cls)))


def stage_settings(cls: type[Stage]) -> dict[str, Any]:
    """The worker settings naming ``cls``: ``uses``, plus the class itself when by value.

    Raises whatever cloudpickle raises for a class it cannot pickle (one holding a lock or
    an open file, say); :meth:`stageflow.Pipeline.check_runnable` calls this up front.
    """
    settings: dict[str, Any] = {"uses": f"{cls.__module__}:{cls.__qualname__}"}
    if by_value(cls):
        blob = _pickled.get(cls)
        if blob is None:
            import cloudpickle

            blob = base64.b64encode(cloudpickle.dumps(cls)).decode("ascii")
            _pickled[cls] = blob
        settings[PICKLED] = blob
    return settings


def load_stage_class(settings: dict[str, Any]) -> type[Stage]:
    """The stage class the settings name: unpickled when shipped by value, else imported."""
    reference: str = settings["uses"]
    blob = settings.get(PICKLED)
    obj: Any
    if blob is not None:
        # From our parent's private pipe, like the rest of the settings; the classes
        # cloudpickle wrote need only the standard unpickler.
        obj = pickle.loads(base64.b64decode(blob))
    else:
        module_name, _, qualname = reference.partition(":")
        obj = importlib.import_module(module_name)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    if not (isinstance(obj, type) and issubclass(obj, Stage)):
        raise ImportError(f"{reference} is not a stageflow.Stage subclass")
    return obj
