"""The hand-written benchmark baselines compute exactly what the seed plugin computes."""

from __future__ import annotations

import json

from stageflow_seed import stages

from benchmarks import seed_math
from tests.helpers import REPO


def test_benchmark_math_matches_the_seed_plugin() -> None:
    """normalize, mean, variance and trend agree on every bundled sample record."""
    sample = (REPO / "examples" / "seed" / "sample.jsonl").read_text().splitlines()
    for line in sample:
        values = json.loads(line)["raw_values"]
        norm = stages.normalize(values)
        assert seed_math.normalize(values) == norm
        assert seed_math.mean(norm) == stages.mean(norm)
        assert seed_math.variance(norm) == stages.variance(norm)
        assert seed_math.trend(norm) == stages.trend(norm)
