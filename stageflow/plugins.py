"""Finding stages: the plugin manager and the stage registry built from it.

Plugins arrive through the ``stageflow`` entry-point group. A plugin that fails to import,
or whose hook fails, is recorded as a :class:`PluginProblem` and reported by name; the
other plugins keep working.
"""

from __future__ import annotations

import difflib
import functools
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


class StageEntry:
    """A stage class together with where it came from: the plugin that registered it and
    the installed distribution (with its version) that provides it, where known.

    For a class named by ``module:Class`` the distribution is looked up when first asked
    for: finding it reads the file list of every installed distribution, a tenth of a
    second on a run's start that only the listings (graph, plugins) ever use.
    """

    __slots__ = ("_distribution", "_module", "cls", "plugin", "version")

    def __init__(
        self,
        cls: type[Stage],
        plugin: str | None = None,
        distribution: str | None = None,
        version: str | None = None,
        *,
        module: str | None = None,
    ) -> None:
        self.cls = cls
        self.plugin = plugin
        self.version = version
        self._distribution = distribution
        self._module = module  # whose distribution to look up, if not given

    @property
    def distribution(self) -> str | None:
        if self._module is not None:
            self._distribution = _distribution_of(self._module)
            self._module = None
        return self._distribution

    def _key(self) -> tuple[Any, ...]:
        return (self.cls, self.plugin, self.distribution, self.version)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, StageEntry) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return (
            f"StageEntry(cls={self.cls!r}, plugin={self.plugin!r}, "
            f"distribution={self.distribution!r}, version={self.version!r})"
        )

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
    return StageEntry(obj, module=module_name)


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """``"did you mean 'x'? "`` for the closest of ``candidates``, or "" when none is close."""
    close = difflib.get_close_matches(name, list(candidates), n=1)
    return f"did you mean {close[0]!r}? " if close else ""


@functools.cache
def _distribution_of(module_name: str) -> str | None:
    """The installed distribution that provides the top-level package of ``module_name``.

    What ``importlib.metadata.packages_distributions()`` tells, read as plain text: that
    makes a path object of every file of every installed distribution, and parses every
    one's metadata, seven times as long with the few dozen of a development environment.
    """
    top = module_name.partition(".")[0]
    for dist in metadata.distributions():
        if top in _top_level_names(dist):
            name: str = dist.metadata["Name"]
            return name
    return None


def _top_level_names(dist: metadata.Distribution) -> set[str]:
    """The importable top-level names a distribution installs: its ``top_level.txt``, or
    else the first part of each path in its ``RECORD``."""
    declared = dist.read_text("top_level.txt")
    if declared is not None:
        return set(declared.split())
    names = set()
    for line in (dist.read_text("RECORD") or "").splitlines():
        # path,hash,size: a path with a comma is quoted, and no module name holds one.
        first, nested, _ = line.partition(",")[0].partition("/")
        if not nested:
            first = first.removesuffix(".py")
        if first.isidentifier() and first != "__pycache__":
            names.add(first)
    return names
