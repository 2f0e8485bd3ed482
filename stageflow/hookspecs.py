"""The hooks a stageflow plugin can implement.

Plugins are modules (or objects) registered through the ``stageflow`` entry-point group.
Implement a hook by decorating a function of the same name with ``stageflow.hookimpl``.
Every hook is called with keyword arguments only.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from stageflow.stage import Stage

PROJECT = "stageflow"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# -- discovery ---------------------------------------------------------------------------


@hookspec
def stageflow_register_stages() -> Iterable[type[Stage]]:
    """Return the stage classes this plugin provides.

    Fires once when stageflow builds its stage registry: in the CLI before a pipeline is
    resolved, and in :meth:`stageflow.Pipeline.from_file`. Takes no arguments. Returns an
    iterable of :class:`stageflow.Stage` subclasses. Results of all plugins are collected;
    two stages with the same ``name`` are an error that names both plugins.
    """
    raise NotImplementedError  # a specification: plugins provide the implementations
