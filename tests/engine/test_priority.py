"""Workers upstream of the last unit run nicer, so the stages near the output get the CPU first."""

from __future__ import annotations

import os

import pytest

from stageflow import Pipeline
from stageflow.engine.options import EngineOptions
from tests.engine.stages import SecondPid, StampPid
from tests.helpers import run_stageflow

ITEMS = [{"id": str(i), "text": "x"} for i in range(40)]


def _pipeline() -> Pipeline:
    return Pipeline(
        "pids",
        [
            {"name": "first", "uses": StampPid, "workers": 2},
            {"name": "second", "uses": SecondPid},
        ],
    )


def _niceness(fuse: bool, **options: object) -> tuple[set[int], set[int]]:
    """The niceness of the processes that ran each stage, read while they are alive."""
    first: set[int] = set()
    second: set[int] = set()
    run = _pipeline().run(ITEMS, fuse=fuse, **options)
    for result in run:  # a worker lives until the run's end: every pid here is still there
        first.add(os.getpriority(os.PRIO_PROCESS, result.first_pid))
        second.add(os.getpriority(os.PRIO_PROCESS, result.second_pid))
    assert run.report.records_done == len(ITEMS)
    return first, second


def test_the_workers_before_the_last_unit_run_five_nicer_and_the_last_as_the_caller() -> None:
    own = os.getpriority(os.PRIO_PROCESS, 0)
    assert _niceness(fuse=False) == ({min(own + 5, 19)}, {own})


def test_upstream_nice_sets_the_step_and_zero_leaves_every_worker_as_the_caller() -> None:
    own = os.getpriority(os.PRIO_PROCESS, 0)
    assert _niceness(fuse=False, upstream_nice=2) == ({min(own + 2, 19)}, {own})
    assert _niceness(fuse=False, upstream_nice=0) == ({own}, {own})


def test_a_pipeline_fused_into_one_unit_has_no_upstream_to_lower() -> None:
    own = os.getpriority(os.PRIO_PROCESS, 0)
    assert _niceness(fuse=True) == ({own}, {own})


def test_a_niceness_out_of_range_is_refused_with_the_range() -> None:
    with pytest.raises(ValueError, match="upstream_nice is 20; give 0 to 19"):
        EngineOptions(upstream_nice=20)
    result = run_stageflow("run", "examples/seed/pipeline.yaml", "--upstream-nice", "-1")
    assert result.returncode == 2
    assert "-1 is not a niceness increment; give 0 to 19" in result.stderr
