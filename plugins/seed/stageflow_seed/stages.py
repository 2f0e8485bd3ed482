"""The seed's three stages, with the seed's arithmetic.

``preprocessor`` divides every value by the series' maximum when that maximum is positive;
``analyzer`` computes the mean, the population variance and a first-versus-last trend;
``collector`` ends the pipeline: it passes every result through and logs progress and a
summary.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from typing import Any, Literal

from pydantic import BaseModel, Field

import stageflow

__all__ = [
    "AnalysisResult",
    "Analyzer",
    "Collector",
    "CollectorConfig",
    "Preprocessed",
    "Preprocessor",
    "RawSeries",
]

Trend = Literal["increasing", "decreasing", "unknown"]


class RawSeries(BaseModel):
    """One raw measurement series, as it enters the pipeline."""

    id: str = Field(description="Identifier carried through every stage.")
    raw_values: list[float] = Field(description="The measurements, in order.")
    metadata: dict[str, Any] = Field(default_factory=dict, description="Passed through as is.")


class Preprocessed(BaseModel):
    """A series scaled into [0, 1] by its maximum."""

    id: str
    processed_at: float = Field(description="Unix time the preprocessor handled the record.")
    normalized_data: list[float] = Field(
        description="raw_values divided by their maximum when it is positive, else unchanged."
    )
    metadata: dict[str, Any] = Field(default_factory=dict)


class AnalysisResult(BaseModel):
    """Summary statistics of one normalized series."""

    id: str
    analyzed_at: float = Field(description="Unix time the analyzer handled the record.")
    mean: float = Field(description="Arithmetic mean; 0 for an empty series.")
    variance: float = Field(description="Population variance; 0 for an empty series.")
    trend: Trend = Field(
        description='"increasing" when the last value exceeds the first, "decreasing" '
        'otherwise, "unknown" with fewer than two values.'
    )
    original_metadata: dict[str, Any] = Field(default_factory=dict)


class CollectorConfig(BaseModel):
    """Configuration of the collector stage."""

    progress_every: int = Field(
        default=1000, ge=1, description="Log a progress line every this many results."
    )


def normalize(values: list[float]) -> list[float]:
    """Divide by the maximum when it is positive; otherwise return the values unchanged."""
    if not values:
        return []
    top = max(values)
    return [v / top for v in values] if top > 0 else list(values)


def mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def variance(values: list[float]) -> float:
    """Population variance, as the seed computes it."""
    if not values:
        return 0.0
    m = mean(values)
    return sum((x - m) ** 2 for x in values) / len(values)


def trend(values: list[float]) -> Trend:
    if len(values) < 2:
        return "unknown"
    return "increasing" if values[-1] > values[0] else "decreasing"


class Preprocessor(stageflow.Stage):
    """Scale each series by its maximum."""

    name = "preprocessor"
    Input = RawSeries
    Output = Preprocessed

    def process(self, item: RawSeries) -> Preprocessed:
        return Preprocessed(
            id=item.id,
            processed_at=time.time(),
            normalized_data=normalize(item.raw_values),
            metadata=item.metadata,
        )


class Analyzer(stageflow.Stage):
    """Mean, population variance and trend of each normalized series."""

    name = "analyzer"
    Input = Preprocessed
    Output = AnalysisResult

    def process(self, item: Preprocessed) -> AnalysisResult:
        values = item.normalized_data
        return AnalysisResult(
            id=item.id,
            analyzed_at=time.time(),
            mean=mean(values),
            variance=variance(values),
            trend=trend(values),
            original_metadata=item.metadata,
        )


class Collector(stageflow.Stage):
    """The end of the pipeline: pass results through, log progress and a summary."""

    name = "collector"
    Input = AnalysisResult
    Output = AnalysisResult
    Config = CollectorConfig
    config: CollectorConfig

    log = logging.getLogger("stageflow_seed.collector")

    def setup(self) -> None:
        self.count = 0
        self.sum_of_means = 0.0
        self.trends: Counter[str] = Counter()

    def process(self, item: AnalysisResult) -> AnalysisResult:
        self.count += 1
        self.sum_of_means += item.mean
        self.trends[item.trend] += 1
        if self.count % self.config.progress_every == 0:
            self.log.info("collected %d results", self.count)
        return item

    def summary(self) -> str:
        """One line describing everything this worker collected."""
        mean_of_means = self.sum_of_means / self.count if self.count else 0.0
        trends = ", ".join(f"{t} {self.trends[t]}" for t in ("increasing", "decreasing", "unknown"))
        return f"collected {self.count} results; mean of means {mean_of_means:.4f}; {trends}"

    def finish(self) -> None:
        self.log.info("%s", self.summary())
