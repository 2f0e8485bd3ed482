"""stageflow: plugin-based staged data processing over ZeroMQ PUSH/PULL.

The public names load on first use, so that a worker process, which needs only the stage
contract, does not pay for the pipeline-file machinery (YAML, plugin discovery), and so that
``stageflow run`` imports pydantic and the rest as part of its start, with the garbage
collector paused (:mod:`stageflow._collector`).
"""

import importlib as _importlib
from typing import TYPE_CHECKING as _TYPE_CHECKING
from typing import Any as _Any

if _TYPE_CHECKING:
    from stageflow.errors import (
        EngineError,
        InvalidOutput,
        PipelineError,
        PluginError,
        RecordsFailedError,
        SchemaMismatchError,
        SecurityError,
        StageConfigError,
        StageflowError,
        UnknownStageError,
    )
    from stageflow.hookspecs import hookimpl, hookspec
    from stageflow.pipeline import Pipeline, PipelineSpec, StageSpec, WorkerBounds
    from stageflow.stage import Stage

__version__ = "0.1.0"

__all__ = [
    "EngineError",
    "InvalidOutput",
    "Pipeline",
    "PipelineError",
    "PipelineSpec",
    "PluginError",
    "RecordsFailedError",
    "SchemaMismatchError",
    "SecurityError",
    "Stage",
    "StageConfigError",
    "StageSpec",
    "StageflowError",
    "UnknownStageError",
    "WorkerBounds",
    "__version__",
    "hookimpl",
    "hookspec",
]

_LAZY = {
    "EngineError": "stageflow.errors",
    "InvalidOutput": "stageflow.errors",
    "Pipeline": "stageflow.pipeline",
    "PipelineError": "stageflow.errors",
    "PipelineSpec": "stageflow.pipeline",
    "PluginError": "stageflow.errors",
    "RecordsFailedError": "stageflow.errors",
    "SchemaMismatchError": "stageflow.errors",
    "SecurityError": "stageflow.errors",
    "Stage": "stageflow.stage",
    "StageConfigError": "stageflow.errors",
    "StageSpec": "stageflow.pipeline",
    "StageflowError": "stageflow.errors",
    "UnknownStageError": "stageflow.errors",
    "WorkerBounds": "stageflow.pipeline",
    "hookimpl": "stageflow.hookspecs",
    "hookspec": "stageflow.hookspecs",
}


def __getattr__(name: str) -> _Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'stageflow' has no attribute {name!r}")
    value = getattr(_importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
