"""Every exception stageflow raises on purpose.

The tree::

    StageflowError
    ├── PluginError              a plugin or stage class is unusable
    ├── PipelineError            a pipeline file or definition is invalid (CLI exit status 2)
    │   ├── UnknownStageError    `uses:` names no registered stage and no importable class
    │   ├── StageConfigError     a stage's `config:` block fails the stage's Config model
    │   └── SchemaMismatchError  a stage's Output cannot satisfy the next stage's Input
    ├── EngineError              the engine could not run the pipeline (CLI exit status 3)
    ├── GraphvizError            `stageflow graph` needs Graphviz's `dot` and it is missing or
    │                            failed (CLI exit status 2)
    ├── ScaffoldError            `stageflow new` cannot create or extend a plugin project
    │                            (CLI exit status 2)
    ├── SecurityError            CURVE keys are missing, unreadable or readable by others, or
    │                            an off-host address was asked for without keys (exit status 2)
    ├── ClusterError             a run cannot be placed on the Dask cluster it was given: no
    │                            dask.distributed, an unreachable scheduler (exit status 2)
    ├── InvalidOutput            process() or finish() returned something that is not the
    │                            stage's Output (the record is dead-lettered under this name)
    └── RecordsFailedError       a run ended with more dead-lettered records than allowed
                                 (CLI exit status 1)

Each message is one sentence that names the problem and how to fix it, fit to print to a
user without a traceback.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from stageflow.engine.report import RunReport


class StageflowError(Exception):
    """Base class of every error stageflow raises on purpose."""


class PluginError(StageflowError):
    """Raised when a stage class breaks the stage contract (missing name, Input or Output)."""


class PipelineError(StageflowError):
    """Raised when a pipeline file or definition cannot be used, before anything starts."""


class UnknownStageError(PipelineError):
    """Raised when a stage's `uses:` matches no registered stage and no importable class."""


class StageConfigError(PipelineError):
    """Raised when a stage's `config:` block does not validate against the stage's Config."""


class SchemaMismatchError(PipelineError):
    """Raised when one stage's Output model cannot satisfy the next stage's Input model."""


class EngineError(StageflowError):
    """Raised when the engine cannot start or keep running its worker processes."""


class GraphvizError(StageflowError):
    """Raised when an image format is asked for and Graphviz's ``dot`` is missing or fails."""


class ScaffoldError(StageflowError):
    """Raised when ``stageflow new`` is given a bad name or a project it cannot extend."""


class SecurityError(StageflowError):
    """Raised when CURVE keys cannot be made or loaded, or a non-loopback bind lacks them."""


class ClusterError(StageflowError):
    """Raised when ``cluster=`` (``--cluster``) cannot be used: dask.distributed is not
    installed, the value is not a Client or a scheduler address, or the scheduler cannot be
    reached."""


class InvalidOutput(StageflowError):
    """Raised inside a worker when process() or finish() returns something that is not a valid
    Output: another type, a dict that fails the model, a float JSON cannot hold (nan, inf), or
    a record too large for one frame. The record is dead-lettered with ``"error":
    "InvalidOutput"`` and, for a failed model, pydantic's ``errors()`` in :attr:`errors`.
    """

    def __init__(self, message: str, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.errors = errors


class RecordsFailedError(StageflowError):
    """Raised at the end of a run that dead-lettered more records than `max_errors` allows.

    The run's report is in :attr:`report`; the results already yielded stay valid.
    """

    def __init__(self, message: str, report: RunReport) -> None:
        super().__init__(message)
        self.report = report

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (str(self), self.report))
