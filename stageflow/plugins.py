"""Finding stages: the plugin manager and the stage registry built from it.

Plugins arrive through the ``stageflow`` entry-point group. A plugin that fails to import,
or whose hook fails, is recorded as a :class:`PluginProblem` and reported by name; the
other plugins keep working.
"""

from __future__ import annotations

import difflib
import importlib
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from types import ModuleType
from typing import Any

import pluggy

from stageflow import hookspecs
from stageflow.errors import PluginError, UnknownStageError
from stageflow.stage import Stage

__all__ = [
    "ENTRY_POINT_GROUP",
    "PluginProblem",
    "StageEntry",
    "StageRegistry",
    "did_you_mean",
    "load_registry",
    "make_plugin_manager",
]

ENTRY_POINT_GROUP = "stageflow"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PluginProblem:
    """A plugin that could not be used, and why."""

    plugin: str
    distribution: str | None
    error: str

    def __str__(self) -> str:
        dist = f" (from {self.distribution})" if self.distribution else ""
        return f"plugin {self.plugin!r}{dist} could not be loaded: {self.error}"


@dataclass(frozen=True)
class StageEntry:
    """A stage class together with where it came from."""

    cls: type[Stage]
    plugin: str | None = None
    distribution: str | None = None
    version: str | None = None

    @property
    def name(self) -> str:
        return self.cls.name

    @property
    def reference(self) -> str:
        """The ``module:QualName`` a worker process imports the class by."""
        return f"{self.cls.__module__}:{self.cls.__qualname__}"


def make_plugin_manager(
    *, load_entrypoints: bool = True, plugins: Iterable[Any] = ()
) -> tuple[pluggy.PluginManager, list[PluginProblem], dict[str, tuple[str, str]]]:
    """Build a fresh plugin manager.

    Returns the manager, the problems met while loading entry points, and a map from each
    loaded plugin's name to its (distribution, version). Extra ``plugins`` (modules or
    objects with hook implementations) are registered as given, which is how tests add a
    temporary plugin without installing it.
    """
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    problems: list[PluginProblem] = []
    origins: dict[str, tuple[str, str]] = {}
    if load_entrypoints:
        for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
            dist = ep.dist.name if ep.dist is not None else None
            version = ep.dist.version if ep.dist is not None else None
            if pm.has_plugin(ep.name):
                continue
            try:
                plugin = ep.load()
                pm.register(plugin, name=ep.name)
                # Checked one plugin at a time, so a misspelt hook name puts only its own
                # plugin aside (the ones before it passed this check already).
                pm.check_pending()
            except pluggy.PluginValidationError as exc:
                if pm.has_plugin(ep.name):
                    pm.unregister(name=ep.name)
                problems.append(
                    PluginProblem(
                        ep.name, dist, f"{exc}; hook names must match those in stageflow.hookspecs"
                    )
                )
                continue
            except Exception as exc:  # a broken plugin is reported, not fatal
                log.debug("plugin %r (%s) failed to load", ep.name, ep.value, exc_info=True)
                problems.append(
                    PluginProblem(
                        ep.name, dist, f"importing {ep.value!r} raised {type(exc).__name__}: {exc}"
                    )
                )
                continue
            origins[ep.name] = (dist or "?", version or "?")
    for plugin in plugins:
        name = pm.register(plugin)
        if name is not None:
            origins.setdefault(name, ("(registered in code)", ""))
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"{exc}; hook names must match those in stageflow.hookspecs") from exc
    return pm, problems, origins


@dataclass
class StageRegistry:
    """The stages the installed plugins provide, by name."""

    stages: dict[str, StageEntry] = field(default_factory=dict)
    problems: list[PluginProblem] = field(default_factory=list)

    def known(self) -> str:
        return ", ".join(sorted(self.stages)) or "(none installed)"

    def resolve(self, uses: str) -> StageEntry:
        """Find the stage ``uses`` names: a registered name or ``package.module:Class``."""
        if ":" in uses:
            return _import_stage(uses)
        try:
            return self.stages[uses]
        except KeyError:
            hint = ""
            if self.problems:
                hint = "; note: " + "; ".join(str(p) for p in self.problems)
            raise UnknownStageError(
                f"unknown stage {uses!r}: {did_you_mean(uses, self.stages)}install the plugin "
                f"that provides it or use one of {self.known()}{hint}"
            ) from None

    def by_plugin(self) -> Mapping[str, list[StageEntry]]:
        grouped: dict[str, list[StageEntry]] = {}
        for entry in self.stages.values():
            grouped.setdefault(entry.plugin or "(unknown)", []).append(entry)
        return grouped


def load_registry(*, load_entrypoints: bool = True, plugins: Iterable[Any] = ()) -> StageRegistry:
    """Load the plugins and collect the stages they register."""
    pm, problems, origins = make_plugin_manager(load_entrypoints=load_entrypoints, plugins=plugins)
    registry = StageRegistry(problems=list(problems))
    for plugin in pm.get_plugins():
        plugin_name = pm.get_name(plugin) or repr(plugin)
        hook = getattr(plugin, "stageflow_register_stages", None)
        if hook is None:
            continue
        dist, version = origins.get(plugin_name, (None, None))
        try:
            classes = list(hook())
            for cls in classes:
                if not (isinstance(cls, type) and issubclass(cls, Stage)):
                    raise PluginError(f"{cls!r} is not a stageflow.Stage subclass")
                cls.check_definition()
        except Exception as exc:  # noqa: BLE001 - one broken plugin must not hide the others
            registry.problems.append(
                PluginProblem(plugin_name, dist, f"{type(exc).__name__}: {exc}")
            )
            continue
        for cls in classes:
            entry = StageEntry(cls, plugin_name, dist, version)
            clash = registry.stages.get(cls.name)
            if clash is not None and clash.cls is not cls:
                registry.problems.append(
                    PluginProblem(
                        plugin_name,
                        dist,
                        f"stage name {cls.name!r} is already registered by plugin "
                        f"{clash.plugin!r}; rename one of them",
                    )
                )
                continue
            registry.stages[cls.name] = entry
    for problem in registry.problems:
        log.warning("%s", problem)
    return registry


def _import_stage(reference: str) -> StageEntry:
    module_name, _, qualname = reference.partition(":")
    try:
        module: ModuleType = importlib.import_module(module_name)
    except ImportError as exc:
        raise UnknownStageError(
            f"cannot import module {module_name!r} for stage {reference!r} ({exc}); "
            "check the spelling or install the package that provides it"
        ) from exc
    except Exception as exc:  # the module's own code failed: one line, not a traceback
        raise UnknownStageError(
            f"importing module {module_name!r} for stage {reference!r} raised "
            f"{type(exc).__name__}: {exc}; fix the module (run with -v for the traceback)"
        ) from exc
    obj: Any = module
    for part in qualname.split("."):
        parent, obj = obj, getattr(obj, part, None)
        if obj is None:
            candidates = [name for name in dir(parent) if not name.startswith("_")]
            raise UnknownStageError(
                f"module {module_name!r} has no attribute {qualname!r}; "
                f"{did_you_mean(part, candidates)}check the class name in {reference!r}"
            )
    if not (isinstance(obj, type) and issubclass(obj, Stage)):
        raise UnknownStageError(f"{reference!r} is not a stageflow.Stage subclass")
    obj.check_definition()
    return StageEntry(obj, plugin=None, distribution=_distribution_of(module_name))


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """``"did you mean 'x'? "`` for the closest of ``candidates``, or "" when none is close."""
    close = difflib.get_close_matches(name, list(candidates), n=1)
    return f"did you mean {close[0]!r}? " if close else ""


def _distribution_of(module_name: str) -> str | None:
    top = module_name.partition(".")[0]
    dists = metadata.packages_distributions().get(top)
    return dists[0] if dists else None
