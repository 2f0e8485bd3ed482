"""stageflow: plugin-based staged data processing over ZeroMQ PUSH/PULL."""

from stageflow.errors import (
    EngineError,
    PipelineError,
    PluginError,
    RecordsFailedError,
    SchemaMismatchError,
    StageConfigError,
    StageflowError,
    UnknownStageError,
)
from stageflow.hookspecs import hookimpl, hookspec
from stageflow.pipeline import Pipeline, PipelineSpec, StageSpec
from stageflow.stage import Stage

__version__ = "0.1.0"

__all__ = [
    "EngineError",
    "Pipeline",
    "PipelineError",
    "PipelineSpec",
    "PluginError",
    "RecordsFailedError",
    "SchemaMismatchError",
    "Stage",
    "StageConfigError",
    "StageSpec",
    "StageflowError",
    "UnknownStageError",
    "__version__",
    "hookimpl",
    "hookspec",
]
