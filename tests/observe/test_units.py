"""The observation parts that need no engine: rates, time buckets, stall reports, the watch."""

from __future__ import annotations

import io
import json
import logging
from dataclasses import replace

import jsonschema
import pytest

from stageflow.engine.report import RunReport
from stageflow.engine.timing import bucket_of, count_buckets, quantile
from stageflow.observe import Progress, StageProgress, WorkerProgress
from stageflow.observe.metrics import MetricsError, parse_address
from stageflow.observe.rate import MovingRate
from stageflow.observe.stall import StallWatch
from stageflow.observe.watch import Watch
from tests.helpers import REPO

SCHEMA = json.loads((REPO / "schemas" / "run-report.schema.json").read_text())


def snapshot(at: float, done: int, current: int | None = None, in_flight: int = 5) -> Progress:
    workers = (
        WorkerProgress("slow#0", 41, True, done, 1.0, current),
        WorkerProgress("slow#1", 42, True, done, 1.0, None),
    )
    stage = StageProgress("slow", workers, done * 2, 2.0, 3, 0, 0)
    return Progress("p", at, done + 10, done, done, 0, in_flight, 0, 0, (stage,))


def test_quantile_is_within_a_bucket_of_the_truth() -> None:
    """The p99 read from time buckets is no lower and at most 19% above the true value."""
    times = [0.000_010 * (i + 1) for i in range(1000)]  # 10 µs .. 10 ms
    counts: dict[int, int] = {}
    for t in times:
        counts[bucket_of(t)] = counts.get(bucket_of(t), 0) + 1
    p99 = quantile(counts, 0.99)
    assert p99 is not None and 0.0099 <= p99 <= 0.0099 * 1.19
    assert quantile({}, 0.5) is None


def test_count_buckets_counts_as_bucket_of_says() -> None:
    """The batch counter (the worker's) puts every duration in bucket_of's bucket."""
    edge = 2 ** (37 / 4) / 1e6  # the lower edge of bucket 37: in it, not below
    times = [0.0, 1e-7, 1e-6, 3.3e-6, 0.000_010, 0.25, 7.0, 0.000_010, edge, edge * 0.999, 1e9]
    times += [0.000_003 * (i + 1) for i in range(500)]
    counts: dict[int, int] = {bucket_of(0.25): 1}
    count_buckets(times, counts)
    expected: dict[int, int] = {bucket_of(0.25): 1}
    for t in times:
        expected[bucket_of(t)] = expected.get(bucket_of(t), 0) + 1
    assert counts == expected


def test_moving_rate_forgets_the_start() -> None:
    """The rate follows the last window, not the average since the start."""
    rate = MovingRate(window=10)
    rate.add(0, 0)
    for second in range(1, 40):
        value = rate.add(second, 100 * second if second < 20 else 2000 + 10 * (second - 20))
    assert value == pytest.approx(10, rel=0.2)


def test_stall_names_the_stage_worker_and_duration(caplog: pytest.LogCaptureFixture) -> None:
    """No progress past the threshold: one warning naming stage, worker, pid, line, seconds."""
    watch = StallWatch(after=30)
    with caplog.at_level(logging.WARNING, logger="stageflow.observe"):
        assert watch.update(snapshot(0, 7)) is None
        assert watch.update(snapshot(5, 7, current=57)) is None
        assert watch.update(snapshot(29, 7, current=57)) is None
        stall = watch.update(snapshot(40, 7, current=57))
        watch.update(snapshot(41, 7, current=57))
    assert stall is not None and stall.stages == ("slow",) and stall.workers == ("slow#0",)
    assert "stage 'slow' holds the work" in stall.message
    assert "slow#0 (pid 41) inside process() on line 57 for 35s" in stall.message
    assert "1 other worker idle" in stall.message
    assert [r.getMessage() for r in caplog.records] == [stall.message]  # said once
    assert watch.update(snapshot(42, 8)) is None  # progress again
    assert "progress resumed" in caplog.records[-1].getMessage()


def test_waiting_for_input_is_not_a_stall() -> None:
    """Nothing in flight means the run waits for its input: no stall however long."""
    watch = StallWatch(after=1)
    watch.update(snapshot(0, 7, in_flight=0))
    assert watch.update(snapshot(100, 7, in_flight=0)) is None


def test_watch_paces_each_listener_and_always_delivers_the_end() -> None:
    """Listeners get snapshots at their own interval, plus the final one marked ended."""
    watch = Watch()
    fast: list[Progress] = []
    slow: list[Progress] = []
    watch.add(fast.append, every=0.0)
    watch.add(slow.append, every=3600)
    ticks = iter(range(1000))
    watch.source = lambda: snapshot(next(ticks), 1)
    watch._publish(watch.source(), 10**9, final=False)
    watch.final(snapshot(2, 2))
    assert len(fast) == 2 and len(slow) == 2 and slow[-1].ended and watch.latest is slow[-1]


def test_report_document_validates_and_counts() -> None:
    """A report with dead letters, restarts and latency validates against the committed schema."""
    report = RunReport("p", max_errors=5, records_in=10, records_done=10, results=8)
    report.stage_workers = {"a": 2, "b": 1}
    report.add_ack("a", "a#0", 10, [0.5, [40, 9, 50, 1]])
    report.add_ack("b", "b#0", 9, [0.1, [30, 9]])
    report.add_dead_letter({"stage": "a", "error": "ValidationError"})
    report.add_dead_letter({"stage": "b", "error": "RuntimeError"})
    report.add_restart("b")
    report.finished, report.seconds, report.latency = True, 2.0, {60: 8}
    document = json.loads(report.to_json())
    jsonschema.validate(document, SCHEMA)
    a, b = document["stages"]
    assert (a["records_in"], a["records_out"], b["records_out"]) == (10, 9, 8)
    assert a["slowest"] and not b["slowest"] and a["busy_share"] == pytest.approx(0.5 / 0.6)
    assert document["dead_letters"] == {
        "total": 2,
        "by_stage": {"a": {"ValidationError": 1}, "b": {"RuntimeError": 1}},
    }
    assert b["restarts"] == 1 and document["outcome"] == "completed"
    assert document["latency"]["count"] == 8 and document["resume"] is None
    stopped = replace(report, interrupted=True, last_line_read=7, resume_hint="--skip 7")
    assert json.loads(stopped.to_json())["resume"] == {"skip": 7, "hint": "--skip 7"}


def test_report_reason_says_record_for_one_dead_letter() -> None:
    """The reason for too many dead letters is grammatical for one record and for several."""
    report = RunReport("p", max_errors=0, records_in=2, records_done=2, results=1)
    report.finished = True
    report.add_dead_letter({"stage": "a", "error": "ValidationError"})
    assert report.reason == "1 record was dead-lettered, more than the 0 allowed"
    report.add_dead_letter({"stage": "a", "error": "ValidationError"})
    assert report.reason == "2 records were dead-lettered, more than the 0 allowed"


@pytest.mark.parametrize(
    ("text", "expected"),
    [("9464", ("127.0.0.1", 9464)), (":0", ("127.0.0.1", 0)), ("[::1]:80", ("::1", 80))],
)
def test_metrics_address_defaults_to_loopback(text: str, expected: tuple[str, int]) -> None:
    """A port alone binds loopback; hosts and IPv6 brackets are read as written."""
    assert parse_address(text) == expected


def test_bad_metrics_address_is_one_sentence() -> None:
    """An address without a port is refused with the form to use."""
    with pytest.raises(MetricsError, match="give HOST:PORT"):
        parse_address("localhost:http")


def test_runner_times_each_process_call() -> None:
    """The runner adds each process() call's seconds and time bucket to what it sends, when
    the worker accounts for them (once per report, not per slice of a frame)."""
    from stageflow.engine.runner import Pending, StageRunner
    from tests.engine.stages import Split, SplitConfig

    runner = StageRunner(Split, "split", SplitConfig(pause=0.02))
    pending = Pending()
    records = [b'{"id":"%d","text":"a b"}' % i for i in range(3)]
    runner.run_batch([n for i in range(3) for n in (i + 1, 0, 7)], records, pending)
    runner.account(pending)
    # Counted by stage name: a fused group's worker reports each of its stages.
    assert 0.06 <= pending.busy["split"] < 1.0
    assert sum(pending.times["split"].values()) == 3
    assert min(pending.times["split"]) >= bucket_of(0.02)  # a sleep lasts at least what it asked
    taken = pending.take()
    assert taken.busy["split"] >= 0.06 and sum(taken.times["split"].values()) == 3
    assert pending.busy == {} and pending.times == {}


def test_last_line_of_a_short_run_shows_its_average_rate() -> None:
    """A run that ends before its second snapshot shows records/s, not 0 rec/s, at the end."""
    from rich.console import Console

    from stageflow.observe.progress import LiveDisplay

    console = Console(record=True, force_terminal=True, width=120, file=io.StringIO())
    display = LiveDisplay(console)
    display.start()
    display(replace(snapshot(0.2, 300), ended=True))
    display.stop()
    assert "1,500 rec/s" in console.export_text()


def test_live_display_aligns_stage_columns_and_marks_the_slowest() -> None:
    """Each stage is one line whose numbers sit under their headings; the slowest is marked."""
    from rich.console import Console

    from stageflow.observe.progress import InputGauge, _Figures, render_progress

    fast = StageProgress("parse", (), 40_000, 1.0, 0, 0, 0)
    slow = StageProgress("score-everything", (), 7, 9.0, 12, 0, 2)
    progress = Progress("p", 3.0, 10, 7, 7, 2, 3, 0, 0, (fast, slow))
    figures = _Figures(InputGauge(1000, lambda: 250))
    figures.update(progress)
    console = Console(record=True, width=120, file=io.StringIO())
    console.print(render_progress(progress, figures))
    lines = console.export_text().splitlines()
    assert "━" * 40 in lines  # the input bar, on a line of its own
    assert "input 25%" in lines[0]
    header = next(line for line in lines if line.startswith("stage"))
    parse = next(line for line in lines if line.startswith("parse"))
    score = next(line for line in lines if line.startswith("score-everything"))
    assert header.index("records") + len("records") == parse.index("40,000") + len("40,000")
    assert score.index("12") + 2 == header.index("queued") + len("queued")
    assert "◀ slowest" in score and "◀ slowest" not in parse and "✗2" in score
