"""run_stage and run_pipeline give exactly what real runs give: results and dead letters."""

from __future__ import annotations

import json
import signal
import threading
from pathlib import Path
from typing import Any

import pytest
from stageflow_seed import Analyzer, Collector, Preprocessor

from stageflow import Pipeline
from stageflow.errors import EngineError, StageConfigError
from stageflow.testing import run_pipeline, run_stage
from tests.helpers import REPO, run_stageflow
from tests.testing.stages import Count, Line, Words

KIT = Path(__file__).parent / "pipelines" / "kit.yaml"
SEED = REPO / "examples" / "seed"

#: Every path of the per-record code, one line each (no blank lines, so line == sequence).
KIT_INPUT = [
    '{"id": "1", "text": "hello big world"}',
    '{"id": "2", "text": ""}',
    '{"id": "3", "text": "boom"}',
    "not json at all",
    '{"id": "5"}',
    '{"id": "6", "text": "a skip ouch none xy"}',
    '{"id": "7", "text": "bad-dict"}',
    '{"id": "8", "text": "wrong-type"}',
    '{"id": "9", "text": "sleep"}',
    '{"id": "10", "text": "the end"}',
    '{"id": "11", "text": NaN}',
]
#: A line that is not UTF-8: a real run keeps its bytes in the dead letter (base64).
NOT_UTF8 = b'{"id": "12", "text": "caf\xe9"}'

#: Fields that differ between any two runs of the seed stages: the time they ran.
SEED_CLOCK_FIELDS = ("analyzed_at",)


def canonical(entries: list[dict[str, Any]]) -> list[str]:
    """Dead letters or records as sorted JSON: order is completion order in a real run.

    Every field is compared, tracebacks included: both runs execute the same runner code and
    the same stage modules from the same files, so not even a path differs.
    """
    return sorted(json.dumps(entry, sort_keys=True) for entry in entries)


def cli_run(
    pipeline: Path, lines: list[str | bytes], tmp_path: Path
) -> tuple[list[bytes], list[dict]]:  # type: ignore[type-arg]
    source = tmp_path / "input.jsonl"
    encoded = [line.encode() if isinstance(line, str) else line for line in lines]
    source.write_bytes(b"".join(line + b"\n" for line in encoded))
    output = tmp_path / "output.jsonl"
    dead = tmp_path / "dead.jsonl"
    result = run_stageflow(
        "run", str(pipeline), "--input", str(source), "--output", str(output),
        "--dead-letter", str(dead), "--max-errors", "1000",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    entries = [json.loads(line) for line in dead.read_text(encoding="utf-8").splitlines()]
    return output.read_bytes().splitlines(), entries


def test_pipeline_file_agrees_with_stageflow_run(tmp_path: Path) -> None:
    """Fan-out, filter, raise, bad outputs, timeout, failing finish(): byte-equal to the CLI."""
    lines, dead = cli_run(KIT, [*KIT_INPUT, NOT_UTF8], tmp_path)
    handler = signal.getsignal(signal.SIGALRM)
    local = run_pipeline(KIT, [*KIT_INPUT, NOT_UTF8])
    assert signal.getsignal(signal.SIGALRM) is handler  # the timeout's handler is put back
    assert sorted(local.lines) == sorted(lines)
    assert canonical(local.dead_letters) == canonical(dead)
    # Every kind of failure is really exercised.
    assert len(dead) == 11
    kinds = {entry["error"] for entry in dead}
    expected = {"InvalidOutput", "RecordTimeout", "RuntimeError", "ValueError", "ValidationError"}
    assert expected <= kinds
    assert any("record_base64" in entry for entry in dead)
    assert any(entry.get("traceback") for entry in dead)


def test_python_objects_form_agrees_with_pipeline_run() -> None:
    """The Python-objects form, inputs as models, dicts and JSON: same as Pipeline.run."""
    stages = [
        {"name": "words", "uses": Words, "config": {"fail_on": "xy"}, "retries": 0},
        {"name": "count", "uses": Count},
    ]
    items: list[Any] = [
        Line(id="m", text="model input"),
        {"id": "d", "text": "a dict xy"},
        *KIT_INPUT[:8],
    ]
    run = Pipeline("objects", stages).run(items, max_errors=1000)
    real = [result.model_dump_json() for result in run]
    local = run_pipeline(stages, items)
    assert sorted(r.model_dump_json() for r in local.outputs) == sorted(real)
    assert canonical(local.dead_letters) == canonical(run.report.dead_letters)
    for key in ("records_in", "records_done", "results", "dead_lettered", "processed"):
        assert getattr(local.report, key) == getattr(run.report, key), key


def test_run_stage_agrees_with_a_one_stage_run() -> None:
    """run_stage's outputs, finish outputs and dead letters are a one-stage real run's."""
    inputs = KIT_INPUT[:8]
    run = Pipeline("one", [{"name": Words.name, "uses": Words}]).run(inputs, max_errors=1000)
    real = [result.model_dump_json() for result in run]
    local = run_stage(Words, inputs)
    assert [o.model_dump_json() for o in local.outputs + local.finish_outputs] == real
    assert [o.id for o in local.finish_outputs] == ["total"]
    assert canonical(local.dead_letters) == canonical(run.report.dead_letters)


def test_seed_pipeline_agrees_with_stageflow_run(tmp_path: Path) -> None:
    """The seed pipeline (2 workers a stage) in process equals the CLI, but for the clock."""
    good = (SEED / "sample.jsonl").read_text(encoding="utf-8").splitlines()[:40]
    lines = [*good[:20], '{"id": "bad", "raw_values": "nope"}', "{", *good[20:]]
    real, dead = cli_run(SEED / "pipeline.yaml", lines, tmp_path)
    local = run_pipeline(SEED / "pipeline.yaml", lines)

    def without_clock(records: list[bytes]) -> list[str]:
        loaded = [json.loads(record) for record in records]
        for record in loaded:
            for key in SEED_CLOCK_FIELDS:
                assert isinstance(record.pop(key), float)
        return canonical(loaded)

    assert len(real) == 40
    assert without_clock(local.lines) == without_clock(real)
    assert canonical(local.dead_letters) == canonical(dead)
    assert [entry["line"] for entry in local.dead_letters] == [21, 22]


def test_run_stage_validates_config_like_a_pipeline_file() -> None:
    """A bad config is the pipeline's StageConfigError; a Config model is accepted too."""
    with pytest.raises(StageConfigError, match="progress_every"):
        run_stage(Collector, [], {"progress_every": 0})
    result = run_stage(Collector, [], Collector.Config(progress_every=5))  # type: ignore[misc]
    assert result.outputs == [] and result.dead_letters == []


def test_run_stage_resolves_registered_names_and_chains() -> None:
    """A stage named by its registered name runs, and its outputs feed the next stage."""
    raw = [{"id": "s", "raw_values": [1, 2, 4]}]
    first = run_stage("preprocessor", raw)
    second = run_stage(Analyzer, first.outputs)
    assert second.outputs[0].trend == "increasing"
    assert run_stage(Preprocessor, raw).report.processed == {"preprocessor": 1}


def test_failing_setup_is_an_engine_error() -> None:
    """setup() raising is an EngineError naming the stage, as a real run exits with status 3."""

    class Broken(Words):
        name = "kit-broken"

        def setup(self) -> None:
            raise OSError("model file missing")

    with pytest.raises(EngineError, match="'kit-broken' could not start: setup\\(\\) raised"):
        run_stage(Broken, [])


def test_timeout_off_the_main_thread_is_refused() -> None:
    """A stage timeout needs SIGALRM, so outside the main thread it is a clear error."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            run_stage(Words, [], timeout=1.0)
        except EngineError as exc:
            errors.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(10)
    assert len(errors) == 1 and "main thread" in str(errors[0])
