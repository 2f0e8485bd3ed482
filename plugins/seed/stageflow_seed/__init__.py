"""The seed analysis stages: normalize raw series, summarize them, collect the results.

Installed as the ``seed`` plugin of the ``stageflow`` entry-point group::

    preprocess (preprocessor) → analyze (analyzer) → collect (collector)
"""

from __future__ import annotations

import stageflow
from stageflow_seed.stages import (
    AnalysisResult,
    Analyzer,
    Collector,
    CollectorConfig,
    Preprocessed,
    Preprocessor,
    RawSeries,
)

__all__ = [
    "AnalysisResult",
    "Analyzer",
    "Collector",
    "CollectorConfig",
    "Preprocessed",
    "Preprocessor",
    "RawSeries",
    "stageflow_register_stages",
]


@stageflow.hookimpl
def stageflow_register_stages() -> list[type[stageflow.Stage]]:
    """Provide the three seed stages."""
    return [Preprocessor, Analyzer, Collector]
