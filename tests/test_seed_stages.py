"""The seed plugin's stages, run in-process and checked against independently computed numbers."""

from __future__ import annotations

import json
import logging
import statistics
import time
from fractions import Fraction
from pathlib import Path

import pytest
from pydantic import ValidationError
from stageflow_seed import (
    AnalysisResult,
    Analyzer,
    Collector,
    Preprocessed,
    Preprocessor,
    RawSeries,
    stageflow_register_stages,
)

from stageflow.pipeline import Pipeline
from stageflow.stage import iter_outputs

EXAMPLES = Path(__file__).parent.parent / "examples" / "seed"


def run_stage(stage_cls: type, items: list[dict], config: object = None) -> list:
    """Drive a stage the way a worker does: setup, process every record, finish."""
    stage = stage_cls(config)
    stage.setup()
    outputs = []
    for item in items:
        outputs.extend(iter_outputs(stage.process(stage_cls.Input.model_validate(item))))
    outputs.extend(iter_outputs(stage.finish()))
    return outputs


def exact_stats(values: list[float]) -> tuple[Fraction, Fraction]:
    """Mean and population variance in exact arithmetic."""
    fractions = [Fraction(v) for v in values]
    mean = sum(fractions, Fraction(0)) / len(fractions)
    return mean, sum((f - mean) ** 2 for f in fractions) / len(fractions)


def test_plugin_hook_registers_three_stages() -> None:
    """The seed plugin's hook returns the three stage classes under their documented names."""
    assert [cls.name for cls in stageflow_register_stages()] == [
        "preprocessor",
        "analyzer",
        "collector",
    ]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ([2.0, 4.0, 8.0], [0.25, 0.5, 1.0]),
        ([5.0], [1.0]),
        ([], []),
        ([0.0, 0.0, 0.0], [0.0, 0.0, 0.0]),
        ([-3.0, -1.5], [-3.0, -1.5]),
        ([-4.0, 2.0], [-2.0, 1.0]),
    ],
)
def test_preprocessor_divides_by_a_positive_maximum(
    raw: list[float], expected: list[float]
) -> None:
    """Values are divided by their max when it is positive, else passed through unchanged."""
    before = time.time()
    [out] = run_stage(Preprocessor, [{"id": "r1", "raw_values": raw, "metadata": {"batch": 3}}])
    assert isinstance(out, Preprocessed)
    assert out.normalized_data == expected
    assert out.id == "r1" and out.metadata == {"batch": 3}
    assert before <= out.processed_at <= time.time()


def test_preprocessor_metadata_defaults_to_empty() -> None:
    """A record without metadata gets an empty mapping, and a bad record fails validation."""
    [out] = run_stage(Preprocessor, [{"id": "r", "raw_values": [1]}])
    assert out.metadata == {}
    with pytest.raises(ValidationError):
        RawSeries.model_validate({"id": "r", "raw_values": ["not a number"]})


@pytest.mark.parametrize(
    ("values", "trend"),
    [
        ([0.1, 0.5, 1.0], "increasing"),
        ([1.0, 0.2, 0.4], "decreasing"),
        ([0.5, 0.9, 0.5], "decreasing"),  # equal ends are not an increase, as in the seed
        ([0.3, 0.25], "decreasing"),
        ([0.7], "unknown"),
    ],
)
def test_analyzer_statistics_and_trend(values: list[float], trend: str) -> None:
    """Mean and population variance match exact arithmetic; trend compares last with first."""
    [out] = run_stage(
        Analyzer,
        [{"id": "a", "processed_at": 1.0, "normalized_data": values, "metadata": {"k": "v"}}],
    )
    assert isinstance(out, AnalysisResult)
    mean, variance = exact_stats(values)
    assert out.mean == pytest.approx(float(mean), rel=1e-12)
    assert out.variance == pytest.approx(float(variance), rel=1e-12, abs=1e-15)
    assert out.variance == pytest.approx(statistics.pvariance(values), rel=1e-12, abs=1e-15)
    assert out.trend == trend
    assert out.original_metadata == {"k": "v"}


def test_analyzer_empty_series() -> None:
    """An empty series has mean 0, variance 0 and an unknown trend."""
    [out] = run_stage(Analyzer, [{"id": "e", "processed_at": 0.0, "normalized_data": []}])
    assert (out.mean, out.variance, out.trend) == (0.0, 0.0, "unknown")


def test_chain_over_the_bundled_sample() -> None:
    """The three stages chained in-process over sample.jsonl give exact statistics per record."""
    records = [json.loads(line) for line in (EXAMPLES / "sample.jsonl").read_text().splitlines()]
    assert len(records) == 2000
    preprocessed = run_stage(Preprocessor, records)
    analyzed = run_stage(Analyzer, [p.model_dump() for p in preprocessed])
    collected = run_stage(Collector, [a.model_dump() for a in analyzed])
    assert [c.id for c in collected] == [r["id"] for r in records]
    for record, result in zip(records, collected, strict=False):
        raw = record["raw_values"]
        top = max(raw, default=0)
        normalized = [Fraction(v) / Fraction(top) for v in raw] if top > 0 else raw
        if normalized:
            mean, variance = exact_stats(normalized)
        else:
            mean = variance = Fraction(0)
        assert result.mean == pytest.approx(float(mean), rel=1e-9, abs=1e-12)
        assert result.variance == pytest.approx(float(variance), rel=1e-9, abs=1e-12)
        expected_trend = (
            "unknown"
            if len(raw) < 2
            else "increasing"
            if normalized[-1] > normalized[0]
            else "decreasing"
        )
        assert result.trend == expected_trend
        assert result.original_metadata == record["metadata"]


def test_collector_passes_through_and_logs(caplog: pytest.LogCaptureFixture) -> None:
    """The collector returns each result, logs every N results and a summary at finish."""
    results = [
        {"id": str(n), "analyzed_at": 0.0, "mean": m, "variance": 0.0, "trend": t}
        for n, (m, t) in enumerate(
            [(0.5, "increasing"), (0.25, "decreasing"), (0.0, "unknown"), (1.0, "increasing")]
        )
    ]
    config = Collector.Config.model_validate({"progress_every": 2})
    stage = Collector(config)
    stage.setup()
    with caplog.at_level(logging.INFO, logger="stageflow_seed.collector"):
        for result in results:
            item = AnalysisResult.model_validate(result)
            assert stage.process(item) is item
        assert stage.finish() is None
    messages = [r.getMessage() for r in caplog.records if r.name == "stageflow_seed.collector"]
    assert messages == [
        "collected 2 results",
        "collected 4 results",
        "collected 4 results; mean of means 0.4375; increasing 2, decreasing 1, unknown 1",
    ]


def test_collector_config_is_validated() -> None:
    """progress_every defaults to 1000 and must be at least 1."""
    assert Collector(None).config.progress_every == 1000
    with pytest.raises(ValidationError):
        Collector.Config.model_validate({"progress_every": 0})


def test_collector_summary_without_results() -> None:
    """A worker that collected nothing reports zeros rather than dividing by zero."""
    stage = Collector()
    stage.setup()
    assert stage.summary() == (
        "collected 0 results; mean of means 0.0000; increasing 0, decreasing 0, unknown 0"
    )


def test_example_pipeline_resolves_to_the_seed_stages() -> None:
    """examples/seed/pipeline.yaml binds the installed seed stages with their workers."""
    pipeline = Pipeline.from_file(EXAMPLES / "pipeline.yaml")
    assert pipeline.name == "seed-analysis"
    assert [(s.name, s.cls, s.workers) for s in pipeline.stages] == [
        ("preprocess", Preprocessor, 2),
        ("analyze", Analyzer, 2),
        ("collect", Collector, 1),
    ]
    assert pipeline.mismatches == ()


def test_sample_is_reproducible(tmp_path: Path) -> None:
    """make_sample.py regenerates sample.jsonl byte for byte, with empty and all-zero series."""
    import runpy

    module = runpy.run_path(str(EXAMPLES / "make_sample.py"))
    out = tmp_path / "sample.jsonl"
    module["main"](out)
    assert out.read_bytes() == (EXAMPLES / "sample.jsonl").read_bytes(), (
        "examples/seed/sample.jsonl is stale: run python examples/seed/make_sample.py"
    )
    records = [json.loads(line) for line in out.read_text().splitlines()]
    lengths = {len(r["raw_values"]) for r in records}
    assert lengths == set(range(21))
    assert any(r["raw_values"] and not any(r["raw_values"]) for r in records)
