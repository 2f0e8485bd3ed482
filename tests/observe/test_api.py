"""The observation surface of the embedding API: run.progress(), on_progress, metrics=."""

from __future__ import annotations

import threading

from stageflow import Pipeline
from stageflow.observe import Progress
from stageflow.observe.metrics import Metrics
from tests.engine.stages import CountWords, Split
from tests.observe.test_cli import scrape


def pipeline(pause: float = 0.0) -> Pipeline:
    return Pipeline(
        "api",
        [
            # Unfused, so that each stage has workers of its own to show.
            {
                "name": "split",
                "uses": Split,
                "workers": 2,
                "config": {"pause": pause},
                "fuse": False,
            },
            {"name": "count", "uses": CountWords},
        ],
    )


def items(n: int) -> list[dict[str, str]]:
    return [{"id": str(i), "text": "a b c"} for i in range(n)]


def test_metrics_move_during_the_run_and_match_the_report() -> None:
    """Scraped while results flow, counters climb; scraped after, they equal the report."""
    metrics = Metrics("127.0.0.1:0")
    assert metrics.url is not None
    seen: list[float] = []
    try:
        run = pipeline(pause=0.003).run(items(400), metrics=metrics, batch_size=16)
        for _ in run:
            value = scrape(metrics.url).get(
                ("stageflow_stage_records_total", (("pipeline", "api"), ("stage", "split")))
            )
            seen.append(value or 0.0)
        final = scrape(metrics.url)
    finally:
        metrics.close()
    assert any(0 < value < 400 for value in seen), seen  # a scrape saw the run midway
    report = run.report
    label = (("pipeline", "api"),)
    assert final[("stageflow_records_in_total", label)] == report.records_in == 400
    assert final[("stageflow_results_total", label)] == report.results == 400
    assert final[("stageflow_in_flight_records", label)] == 0
    for stage in ("split", "count"):
        labels = (("pipeline", "api"), ("stage", stage))
        assert final[("stageflow_stage_records_total", labels)] == report.processed[stage]
        assert final[("stageflow_stage_busy_seconds_total", labels)] == report.busy[stage]
        assert final[("stageflow_worker_restarts_total", labels)] == 0
    assert final[("stageflow_record_latency_seconds_count", label)] == 400
    assert final[("stageflow_record_latency_seconds_sum", label)] == report.latency_seconds


def test_progress_snapshots_from_any_thread() -> None:
    """run.progress() works from the iterating thread and another; listeners see the end."""
    run = pipeline().run(items(300))
    assert run.progress() is None
    listened: list[Progress] = []
    run.on_progress(listened.append, every=0.05)
    elsewhere: list[Progress | None] = []
    for index, _ in enumerate(run):
        if index == 100:
            here = run.progress()
            assert here is not None and not here.ended and here.records_in >= 100
            other = threading.Thread(target=lambda: elsewhere.append(run.progress()))
            other.start()
            other.join()
    last = run.progress()
    assert last is not None and last.ended and listened[-1] is last
    assert (last.records_in, last.results, last.in_flight) == (300, 300, 0)
    split, count = last.stages
    assert [w.name for w in split.workers] == ["split#0", "split#1"]
    assert split.processed == sum(w.processed for w in split.workers) == 300
    assert count.processed == 300 and last.busy_seconds > 0
    assert elsewhere and (elsewhere[0] is None or elsewhere[0].records_in <= 300)


def test_show_progress_draws_the_final_numbers() -> None:
    """The notebook helper draws the run live and leaves its final numbers on the console."""
    import io

    from rich.console import Console

    from stageflow.observe import show_progress

    screen = io.StringIO()
    run = pipeline().run(items(120))
    show_progress(run, Console(file=screen, width=100, force_terminal=True))
    assert len(list(run)) == 120
    drawn = screen.getvalue()
    assert "read 120" in drawn and "written 120" in drawn and "split" in drawn
