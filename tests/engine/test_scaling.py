"""Runtime scaling: workers added and removed while records flow, from another thread."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator

import pytest

from stageflow import Pipeline
from tests.engine.conftest import wait_until
from tests.engine.stages import CountWords, Split, WhoAmI


@pytest.mark.timeout(240)
def test_scale_up_and_down_repeatedly_mid_run_is_exact_and_every_added_worker_works() -> None:
    """run.scale() 1 → 3 → 1 → 4 → 2 from another thread: exact output, every worker worked."""
    pipeline = Pipeline("scaled", [{"name": "who", "uses": WhoAmI, "config": {"pause": 0.001}}])
    done = threading.Event()
    fed: list[int] = []

    def items() -> Iterator[dict[str, str]]:
        i, end = 0, None
        while end is None or i < end:
            if end is None and done.is_set():
                end = i + 500
            fed.append(i)
            yield {"id": str(i), "text": "a"}
            i += 1

    run = pipeline.run(items())
    workers_seen: set[int] = set()
    failures: list[str] = []

    def who() -> list[int]:
        live = [w for w in run.workers() if "who" in w.stage.split("+")]
        workers_seen.update(w.pid for w in live if w.pid is not None)
        return [w.processed for w in live if w.state == "ready"]

    def scaler() -> None:
        try:
            for target in (3, 1, 4, 2):
                run.scale("who", target)
                # Added workers take work; removed ones finish theirs and leave.
                ok = wait_until(
                    lambda t=target: len(who()) == t == len(run.workers()) and all(who()),  # type: ignore[misc]
                    timeout=60,
                )
                if not ok:
                    failures.append(f"never reached {target} working workers: {run.workers()}")
                    return
        finally:
            done.set()

    thread = threading.Thread(target=scaler)
    results: Counter[str] = Counter()
    pids: set[int] = set()
    for result in run:
        if not thread.is_alive() and not done.is_set():
            thread.start()
        results[result.id] += 1
        pids.add(result.pid)
    thread.join()
    assert not failures, failures
    assert results == Counter(str(i) for i in fed)
    assert len(workers_seen) >= 6  # 1 at the start, 2 then 3 more added
    assert workers_seen <= pids  # every worker that ever ran did work
    assert run.report.ok


def test_the_seed_pool_names_and_unknown_stages() -> None:
    """add_worker/remove_worker/scale_to set the counts a run starts with; bad names are named."""
    pipeline = Pipeline(
        "names",
        [{"name": "split", "uses": Split}, {"name": "count", "uses": CountWords}],
    )
    run = pipeline.run([{"id": str(i), "text": "a b"} for i in range(2000)])
    run.add_worker("split")
    run.scale_to("count", 3)
    run.remove_worker("count")
    with pytest.raises(ValueError, match="no stage named 'nope'; the stages are split, count"):
        run.scale("nope", 2)
    ids = [result.id for result in run]
    assert sorted(ids, key=int) == [str(i) for i in range(2000)]
    # The counts the run started with; which of those workers got work is up to timing.
    assert run.report.stage_workers == {"split": 2, "count": 2}
