"""Helpers for testing stage plugins: in-process runs, contract checks and sample records.

* :func:`run_stage` and :func:`run_pipeline` run stages in the calling process with the
  engine's own per-record code, so their outputs and dead letters are a real run's.
* :func:`check_stage` checks a stage class against the stage contract.
* :func:`examples_for` builds valid sample records of a model, :func:`model_strategy` a
  hypothesis strategy of them for ``@given`` tests (both need hypothesis).

The pytest plugin in :mod:`stageflow.testing.pytest_plugin` (registered through the
``pytest11`` entry point) offers them as fixtures.
"""

from stageflow.testing.contract import StageContract, check_stage
from stageflow.testing.examples import examples_for, model_strategy
from stageflow.testing.runs import (
    PipelineResult,
    StageResult,
    load_pipeline,
    run_pipeline,
    run_stage,
)

__all__ = [
    "PipelineResult",
    "StageContract",
    "StageResult",
    "check_stage",
    "examples_for",
    "load_pipeline",
    "model_strategy",
    "run_pipeline",
    "run_stage",
]
