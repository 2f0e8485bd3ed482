"""The seed's arithmetic, as the seed push/pull guide's Preprocessor, Analyzer and
ResultsCollector compute it, for the hand-written pipelines (no pydantic, no validation).

It repeats the seed plugin's four small functions on purpose: the hand-written baselines
must not import stageflow or pydantic, or they would pay their start-up cost.
tests/test_benchmark_math.py keeps the two in step.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any


def normalize(values: list[float]) -> list[float]:
    if not values:
        return []
    top = max(values)
    return [v / top for v in values] if top > 0 else list(values)


def mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def variance(values: list[float]) -> float:
    if not values:
        return 0.0
    m = mean(values)
    return sum((x - m) ** 2 for x in values) / len(values)


def trend(values: list[float]) -> str:
    if len(values) < 2:
        return "unknown"
    return "increasing" if values[-1] > values[0] else "decreasing"


def preprocess(raw: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": raw["id"],
        "processed_at": time.time(),
        "normalized_data": normalize(raw["raw_values"]),
        "metadata": raw.get("metadata", {}),
    }


def analyze(item: dict[str, Any]) -> dict[str, Any]:
    values = item["normalized_data"]
    return {
        "id": item["id"],
        "analyzed_at": time.time(),
        "mean": mean(values),
        "variance": variance(values),
        "trend": trend(values),
        "original_metadata": item["metadata"],
    }


class Collector:
    """Counts and passes results through, like the seed plugin's collector stage."""

    def __init__(self, progress_every: int = 500) -> None:
        self.count = 0
        self.sum_of_means = 0.0
        self.trends: Counter[str] = Counter()
        self.progress_every = progress_every

    def collect(self, result: dict[str, Any]) -> dict[str, Any]:
        self.count += 1
        self.sum_of_means += result["mean"]
        self.trends[result["trend"]] += 1
        return result
