"""The embedding API: Pipeline(...).run(items) in real worker processes."""

from __future__ import annotations

import asyncio
import gc
import io
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import psutil
import pytest

from stageflow import EngineError, Pipeline, RecordsFailedError
from stageflow.engine.launcher import ForkServerLauncher, WorkerProcess
from tests.engine.conftest import live_children, wait_until
from tests.engine.stages import (
    BrokenSetup,
    CountWords,
    DropEmpty,
    Explode,
    FanOut,
    HeldSetup,
    Line,
    Relay,
    Split,
    Sum,
    Tally,
    WhoAmI,
)
from tests.helpers import REPO

SEED = REPO / "examples" / "seed"


def lines(n: int, words: int = 3) -> list[dict[str, str]]:
    return [{"id": str(i), "text": " ".join(["w"] * (i % words))} for i in range(n)]


def split_count(workers: int = 2) -> Pipeline:
    return Pipeline(
        "split-count",
        [
            {"name": "split", "uses": Split, "workers": workers},
            {"name": "count", "uses": CountWords, "workers": workers},
        ],
    )


def expected_seed(record: dict) -> dict:  # type: ignore[type-arg]
    """The seed math, computed independently of the plugin."""
    values = record["raw_values"]
    top = max(values) if values else 0
    norm = [v / top for v in values] if top > 0 else values
    return {
        "mean": statistics.fmean(norm) if norm else 0,
        "variance": statistics.pvariance(norm) if norm else 0,
        "trend": "unknown"
        if len(norm) < 2
        else ("increasing" if norm[-1] > norm[0] else "decreasing"),
    }


def test_seed_pipeline_matches_independent_math() -> None:
    """The bundled seed pipeline, run from its file, gives the seed's numbers for every record."""
    records = [json.loads(line) for line in (SEED / "sample.jsonl").read_text().splitlines()]
    pipeline = Pipeline.from_file(SEED / "pipeline.yaml")
    results = {result.id: result for result in pipeline.run(records)}
    assert len(results) == len(records)
    for record in records:
        want = expected_seed(record)
        got = results[record["id"]]
        assert got.mean == pytest.approx(want["mean"], abs=1e-12)
        assert got.variance == pytest.approx(want["variance"], abs=1e-12)
        assert got.trend == want["trend"]
        assert got.original_metadata == record.get("metadata", {})


def test_results_are_models_and_inputs_may_be_models_or_json() -> None:
    """Items may be dicts, Input models or JSON text; results are Output model instances."""
    items = [{"id": "a", "text": "x y"}, Line(id="b", text="x"), '{"id": "c", "text": ""}']
    results = {r.id: r.words for r in split_count(1).run(items)}
    assert results == {"a": 2, "b": 1, "c": 0}
    assert all(type(r).__name__ == "Count" for r in split_count(1).run(items[:1]))


def test_runs_many_times_from_threads_and_asyncio() -> None:
    """One process runs pipelines again and again: plainly, in a thread and under asyncio."""
    pipeline = split_count(1)
    assert len(list(pipeline.run(lines(100)))) == 100
    assert len(list(pipeline.run(lines(50)))) == 50

    box: list[int] = []
    thread = threading.Thread(target=lambda: box.append(len(list(pipeline.run(lines(70))))))
    thread.start()
    thread.join(60)
    assert box == [70]

    async def main() -> int:
        return await asyncio.to_thread(lambda: len(list(pipeline.run(lines(30)))))

    assert asyncio.run(main()) == 30


def test_abandoned_iteration_stops_every_worker() -> None:
    """Leaving the loop early (and closing the iterator) ends all worker processes."""
    iterator = iter(split_count(2).run(lines(100_000)))
    next(iterator)
    assert len(live_children()) == 5  # 4 workers and the fork server they came from
    iterator.close()  # type: ignore[attr-defined]
    assert wait_until(lambda: not live_children(), timeout=10)


@pytest.mark.parametrize("how", ["break", "next-then-del"])
def test_an_abandoned_run_frees_everything_without_the_garbage_collector(how: str) -> None:
    """`break` (or next()) and dropping the Run, cyclic GC off: workers, fds, ports, temp dir
    are all freed."""
    pipeline = split_count(2)
    assert len(list(pipeline.run(lines(3)))) == 3  # first-use costs (imports, caches) paid
    me = psutil.Process()
    fds, ports = me.num_fds(), len(me.net_connections("tcp"))
    gc.disable()
    try:
        run = pipeline.run(lines(100_000))
        if how == "break":
            for _ in run:
                break
        else:
            next(iter(run))
        # The Run holds its iterator, which may go on later: 4 workers and their fork server.
        assert len(live_children()) == 5
        assert run._core._coordinator is not None
        rundir = run._core._coordinator._rundir
        assert os.path.isdir(rundir)
        del run

        def freed() -> bool:
            return (
                not live_children()
                and me.num_fds() <= fds
                and len(me.net_connections("tcp")) <= ports
                and not os.path.exists(rundir)
            )

        assert wait_until(freed, timeout=10), (me.num_fds(), fds, os.path.exists(rundir))
    finally:
        gc.enable()


def test_load_is_balanced_across_workers() -> None:
    """3,000 records over 3 workers: none gets more than 1.5x its share.

    A run begins once one worker of the stage is ready, so the first one may work alone for
    a moment; a millisecond a record makes the steady state, where credit spreads the
    frames, the bulk of the run.
    """
    stage = {"name": "who", "uses": WhoAmI, "workers": 3, "config": {"pause": 0.001}}
    pipeline = Pipeline("who", [stage])
    shares = Counter(result.pid for result in pipeline.run(lines(3000)))
    assert sum(shares.values()) == 3000 and len(shares) == 3
    assert max(shares.values()) <= 1.5 * 1000


def test_fan_out_filter_and_finish() -> None:
    """Generators fan out, None filters, finish() emits once per worker after setup() once."""
    pipeline = Pipeline(
        "shapes",
        [
            {"name": "split", "uses": Split},
            {"name": "drop", "uses": DropEmpty, "workers": 2},
            {"name": "fan", "uses": FanOut, "workers": 2},
            {"name": "resplit", "uses": Split},
            {"name": "count", "uses": CountWords},
            {"name": "sum", "uses": Sum, "workers": 2},
        ],
    )
    items = lines(300, words=4)  # 0..3 words each
    totals = list(pipeline.run(items))
    assert len(totals) == 2  # one Total per worker of the last stage, from finish()
    assert sum(t.total for t in totals) == sum(i % 4 for i in range(300))
    assert all(t.id.endswith("-setups-1") for t in totals)


@pytest.mark.parametrize(
    ("items", "expected"),
    [
        ([], 0),
        ([{"id": "only", "text": "3"}], 3),
        ([{"id": "zero", "text": "0"}] * 5, 0),
        ([{"id": "big", "text": "10000"}], 10_000),
    ],
    ids=["empty-input", "single-record", "filters-everything", "fan-out-10k"],
)
def test_edge_cases(items: list[dict[str, str]], expected: int) -> None:
    """Empty input, one record, a stage producing nothing, and a 10k fan-out are exact."""
    pipeline = Pipeline("explode", [{"name": "explode", "uses": Explode, "workers": 2}])
    results = [r.id for r in pipeline.run(items)]
    assert len(results) == expected == len(set(results))


def test_failed_records_raise_at_the_end_with_a_report() -> None:
    """Dead letters end the iteration with RecordsFailedError unless max_errors allows them."""
    pipeline = Pipeline(
        "fail", [{"name": "split", "uses": Split, "config": {"fail_on": "bad"}, "retries": 1}]
    )
    items = [{"id": "1", "text": "ok"}, {"id": "2", "text": "bad"}, {"id": "3"}, "{nope"]
    run = pipeline.run(items)
    got = []
    with pytest.raises(RecordsFailedError) as caught:
        for result in run:
            got.append(result.id)
    assert got == ["1"]
    report = caught.value.report
    assert report is run.report and not report.ok
    assert report.dead_lettered == 3 and report.records_done == 4
    by_line = {entry["line"]: entry for entry in report.dead_letters}
    assert by_line[2]["error"] == "RuntimeError" and "after 2 attempts" in by_line[2]["message"]
    assert by_line[3]["error"] == "ValidationError" and by_line[3]["errors"][0]["loc"] == ["text"]
    assert by_line[4]["record"] == "{nope"

    tolerant = pipeline.run(items, max_errors=3)
    assert [r.id for r in tolerant] == ["1"] and tolerant.report.ok


STAGE_SOURCE = (
    "from pydantic import BaseModel\n"
    "import stageflow\n"
    "with open('runs.txt', 'a') as marker:\n"
    "    marker.write('ran\\n')  # once per execution of this code\n"
    "def factor():\n    return 2\n"
    "class Num(BaseModel):\n    n: int\n"
    "class Double(stageflow.Stage):\n"
    "    name = 'double'; Input = Num; Output = Num\n"
    "    def process(self, item):\n        return Num(n=item.n * factor())\n"
)
RUN_SOURCE = (
    "p = stageflow.Pipeline('d', [{'name': 'double', 'uses': Double, 'workers': 2}])\n"
    "print(sorted(r.n for r in p.run({'n': i} for i in range(50))))\n"
)
# A notebook cell: code run by exec() in a fresh namespace named __main__, as Jupyter and
# IPython do it, in an interpreter whose own __main__ has no file.
NOTEBOOK = (
    "import sys\n"
    "cell = sys.stdin.read()\n"
    "namespace = {'__name__': '__main__'}\n"
    "exec(compile(cell, '<cell 1>', 'exec'), namespace)\n"
)


@pytest.mark.parametrize("how", ["script-with-guard", "script-without-guard", "stdin", "notebook"])
def test_stage_defined_in_the_callers_script_or_notebook(tmp_path: Path, how: str) -> None:
    """A stage class from a script, `python -` or a notebook cell runs in the workers, by value.

    The caller's code is executed once: the workers do not run it again.
    """
    if how == "script-with-guard":
        guarded = "".join(f"    {line}\n" for line in RUN_SOURCE.splitlines())
        code = STAGE_SOURCE + "if __name__ == '__main__':\n" + guarded
    else:
        code = STAGE_SOURCE + RUN_SOURCE
    script = tmp_path / "job.py"
    script.write_text(code)
    command = {
        "script-with-guard": ([sys.executable, str(script)], None),
        "script-without-guard": ([sys.executable, str(script)], None),
        "stdin": ([sys.executable, "-"], code),
        "notebook": ([sys.executable, "-c", NOTEBOOK], code),
    }[how]
    done = subprocess.run(
        command[0], input=command[1], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str([2 * i for i in range(50)])
    assert (tmp_path / "runs.txt").read_text() == "ran\n"


def test_stage_classes_that_cannot_travel_are_refused_up_front() -> None:
    """A by-value stage class cloudpickle cannot pickle fails before start, in one sentence."""
    code = (
        "import threading, stageflow\n"
        "from tests.engine.stages import Line\n"
        "class Echo(stageflow.Stage):\n"
        "    name = 'echo'; Input = Line; Output = Line; lock = threading.Lock()\n"
        "    def process(self, item): return item\n"
        "try:\n"
        "    stageflow.Pipeline('p', [{'name': 'echo', 'uses': Echo}]).run([])\n"
        "except stageflow.PipelineError as exc:\n"
        "    print(exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO
    )
    assert "stage class Echo is defined in __main__" in done.stdout, done.stderr
    assert "cannot pickle it: TypeError" in done.stdout


def test_a_stage_class_defined_in_a_function_runs_too() -> None:
    """A class made inside a function travels by value and runs in the workers."""

    def make() -> type:
        class Nested(CountWords):
            pass

        return Nested

    pipeline = Pipeline("p", [{"name": "split", "uses": Split}, {"name": "nested", "uses": make()}])
    assert sorted(r.words for r in pipeline.run(lines(9))) == [0, 0, 0, 1, 1, 1, 2, 2, 2]


def test_read_ahead_keeps_results_flowing_while_input_blocks() -> None:
    """With read_ahead, a result comes out while the input iterator is still blocked."""
    first_result_seen = threading.Event()

    def items():  # type: ignore[no-untyped-def]
        yield {"id": "1", "text": "a"}
        # Blocks until the consumer has the first result: without read-ahead, a deadlock.
        assert first_result_seen.wait(60)
        yield {"id": "2", "text": "b c"}

    ids = []
    for result in split_count(1).run(items(), read_ahead=True):
        ids.append(result.id)
        first_result_seen.set()
    assert ids == ["1", "2"]


def test_a_result_is_not_held_back_by_a_slow_record_behind_it(tmp_path: Path) -> None:
    """The first record's result comes out while the next record is still being processed."""
    gate = tmp_path / "gate"
    pipeline = Pipeline("gated", [{"name": "split", "uses": Split, "config": {"gate": str(gate)}}])
    items = [{"id": "quick", "text": "a"}, {"id": "slow", "text": "gated"}]
    seen = []
    # "slow" blocks its worker until the gate opens, and the gate opens only once "quick"
    # has come out: if the worker held "quick" back, "slow" would time out and fail.
    for result in pipeline.run(items, batch_size=1):
        seen.append(result.id)
        gate.touch()
    assert seen == ["quick", "slow"]


def test_abandoned_read_ahead_runs_leave_no_thread() -> None:
    """The read-ahead thread of an abandoned run stops, instead of blocking forever."""
    before = threading.active_count()
    for _ in range(3):
        iterator = iter(split_count(1).run(lines(50_000), read_ahead=True))
        next(iterator)
        iterator.close()  # type: ignore[attr-defined]
    assert wait_until(lambda: threading.active_count() == before, timeout=10)


def test_a_run_that_fails_to_start_leaves_the_dead_letter_file_alone(tmp_path: Path) -> None:
    """dead_letter=PATH is opened only once the run has started: setup() failing keeps it."""
    dead = tmp_path / "dead.jsonl"
    dead.write_bytes(b'{"line": 1, "error": "from yesterday"}\n')
    pipeline = Pipeline("broken", [{"name": "ner", "uses": BrokenSetup}])
    with pytest.raises(EngineError, match="failed to start"):
        list(pipeline.run(lines(5), dead_letter=dead))
    assert dead.read_bytes() == b'{"line": 1, "error": "from yesterday"}\n'


def test_records_flow_once_one_worker_of_each_stage_is_ready(tmp_path: Path) -> None:
    """A run begins when the first worker of a stage is ready: its results come while the
    stage's other workers are still in setup() (released only by the first result), and
    those join later; every record is written once."""
    gate = {"gate": str(tmp_path)}
    held = Pipeline("held", [{"name": "held", "uses": HeldSetup, "workers": 3, "config": gate}])
    ids = []
    for result in held.run(lines(300)):
        (tmp_path / "open").touch()
        ids.append(result.id)
    assert sorted(ids, key=int) == [str(i) for i in range(300)]
    assert len(list(tmp_path.glob("released.*"))) == 2


class NotingLauncher(ForkServerLauncher):
    """The real fork-server launcher, noting the stage of each worker in each request."""

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[list[str]] = []

    def spawn_all(self, settings: Sequence[dict[str, Any]]) -> list[WorkerProcess]:
        self.requests.append([one["stage"] for one in settings])
        return super().spawn_all(settings)


def test_the_workers_a_run_waits_for_start_first_and_the_others_once_it_began() -> None:
    """The first request to the launcher asks for the first worker of each stage and every
    worker of a keyed stage (what a run waits for), the second for the other workers; the
    counts are exact."""
    launcher = NotingLauncher()
    pipeline = Pipeline(
        "order",
        [
            {"name": "relay", "uses": Relay, "workers": 3},
            {"name": "tally", "uses": Tally, "workers": 2, "key": "text"},
        ],
    )
    try:
        totals = {total.id: total.total for total in pipeline.run(lines(600), launcher=launcher)}
    finally:
        launcher.close()
    assert launcher.requests == [["relay", "tally", "tally"], ["relay", "relay"]]
    assert totals == dict(Counter(line["text"] for line in lines(600)))


def test_a_stop_does_not_wait_for_workers_still_in_setup(tmp_path: Path) -> None:
    """Stopping a run that began while other workers were still in setup() kills those (they
    hold nothing) instead of waiting for them: the records in flight are all written."""
    gate = {"gate": str(tmp_path)}  # never opened: the second and third workers stay held
    held = Pipeline("held", [{"name": "held", "uses": HeldSetup, "workers": 3, "config": gate}])
    run = held.run(lines(50), stop_timeout=2.0)
    started = time.monotonic()
    ids = []
    for result in run:
        run.stop()
        ids.append(result.id)
    assert time.monotonic() - started < 20  # a held worker gives up after 30 s
    assert run.report.interrupted
    assert len(ids) == len(set(ids)) and run.report.results == len(ids) >= 1
    assert not list(tmp_path.glob("released.*"))


def _failing_every_third() -> tuple[Pipeline, list[dict[str, str]]]:
    pipeline = Pipeline(
        "dead", [{"name": "split", "uses": Split, "config": {"fail_on": "boom"}, "retries": 0}]
    )
    items = [{"id": str(n), "text": "boom" if n % 3 == 0 else "a b"} for n in range(1, 301)]
    return pipeline, items


def test_completions_hand_out_each_record_after_its_own_dead_letters_only() -> None:
    """completions() yields a record once its dead letters are written, and before the next's."""
    pipeline, items = _failing_every_third()
    sink = io.StringIO()
    seen: list[int] = []
    for seq, results in pipeline.run(items, dead_letter=sink, max_errors=1000).completions():
        seen.append(seq)
        lines = {json.loads(line)["line"] for line in sink.getvalue().splitlines()}
        assert lines == {n for n in seen if n % 3 == 0}  # none of a record not yet yielded
        assert (results == []) == (seq % 3 == 0)
    assert sorted(seen) == list(range(1, 301))


def test_batches_hand_out_every_record_once_after_their_dead_letters() -> None:
    """batches() yields lists of completed records, each once, their dead letters written."""
    pipeline, items = _failing_every_third()
    sink = io.StringIO()
    seen: list[int] = []
    for batch in pipeline.run(items, dead_letter=sink, max_errors=1000).batches():
        assert batch
        seen += [seq for seq, _ in batch]
        lines = {json.loads(line)["line"] for line in sink.getvalue().splitlines()}
        assert {seq for seq, _ in batch if seq % 3 == 0} <= lines
    assert sorted(seen) == list(range(1, 301))


@pytest.mark.parametrize(("method", "primed"), [("completions", False), ("batches", True)])
def test_on_started_is_before_any_read_or_after_the_first_frame(method: str, primed: bool) -> None:
    """completions() reads nothing before on_started; batches() has input on its way by then."""
    pipeline = Pipeline("prime", [{"name": "split", "uses": Split}])
    pulled: list[int] = []
    handed: list[object] = []
    seen_at_start: list[int] = []

    def items() -> Iterator[dict[str, str]]:
        for n in range(50):
            pulled.append(n)
            yield {"id": str(n), "text": "a"}

    def on_started() -> None:
        seen_at_start.append(len(pulled))
        assert not handed

    for got in getattr(pipeline.run(items()), method)(on_started=on_started):
        handed.append(got)
    assert (seen_at_start[0] > 0) is primed, seen_at_start
    assert len(pulled) == 50 and handed
