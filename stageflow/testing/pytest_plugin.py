"""stageflow's pytest plugin: fixtures for testing stage plugins.

Registered through the ``pytest11`` entry point, so it is active wherever stageflow is
installed. Imports stay inside the fixtures: a test session that uses none of them pays
nothing for the plugin.

``stageflow_run_stage``
    :func:`stageflow.testing.run_stage`, run against the test's :class:`StageflowRegistry`
    so that stages registered there resolve by name.
``stageflow_registry``
    A fresh registry of the installed plugins' stages; ``.register(*classes)`` adds
    temporary stages for this one test.
``stageflow_pipeline``
    ``stageflow_pipeline(path)`` loads a pipeline file (relative to the test module's
    directory) against that registry; run it with :func:`stageflow.testing.run_pipeline`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from stageflow.pipeline import Pipeline
    from stageflow.plugins import StageRegistry
    from stageflow.stage import Stage
    from stageflow.testing.runs import StageResult


class StageflowRegistry:
    """The installed stages plus the ones a test registers; gone when the test ends."""

    def __init__(self) -> None:
        from stageflow.plugins import load_registry

        self.registry: StageRegistry = load_registry()
        self._added: list[str] = []

    def register(self, *classes: type[Stage]) -> None:
        """Make ``classes`` resolvable by name (``uses: NAME``) for the rest of the test."""
        from stageflow.errors import PluginError
        from stageflow.plugins import StageEntry

        for cls in classes:
            cls.check_definition()
            clash = self.registry.stages.get(cls.name)
            if clash is not None and clash.cls is not cls:
                raise PluginError(
                    f"stage name {cls.name!r} is already registered by plugin {clash.plugin!r}; "
                    "give the test stage another name"
                )
            self.registry.stages[cls.name] = StageEntry(cls, "(registered by a test)")
            self._added.append(cls.name)

    def unregister_all(self) -> None:
        for name in self._added:
            self.registry.stages.pop(name, None)
        self._added.clear()


@pytest.fixture
def stageflow_registry() -> Iterator[StageflowRegistry]:
    """A fresh stage registry; stages a test registers in it are removed afterwards."""
    registry = StageflowRegistry()
    try:
        yield registry
    finally:
        registry.unregister_all()


@pytest.fixture
def stageflow_run_stage(
    stageflow_registry: StageflowRegistry,
) -> Callable[..., StageResult]:
    """:func:`stageflow.testing.run_stage`, resolving stage names in ``stageflow_registry``."""
    from stageflow.testing.runs import run_stage

    def run(stage: Any, inputs: Any, config: Any = None, **options: Any) -> StageResult:
        options.setdefault("registry", stageflow_registry.registry)
        return run_stage(stage, inputs, config, **options)

    return run


@pytest.fixture
def stageflow_pipeline(
    request: pytest.FixtureRequest, stageflow_registry: StageflowRegistry
) -> Callable[[str | Path], Pipeline]:
    """Load a pipeline file, relative to the test module, against ``stageflow_registry``."""
    from stageflow.pipeline import Pipeline

    here = request.path.parent

    def load(path: str | Path) -> Pipeline:
        return Pipeline.from_file(here / path, registry=stageflow_registry.registry)

    return load
