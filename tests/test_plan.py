"""The fusion plan: which stages share worker processes, and `stageflow validate` showing it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel

import stageflow
from stageflow.pipeline import Pipeline
from tests.helpers import REPO, run_stageflow


class Item(BaseModel):
    id: str


class Pass(stageflow.Stage):
    name = "pass"
    Input = Item
    Output = Item

    def process(self, item: Item) -> Item:
        return item


class Summary(Pass):
    def finish(self) -> Any:
        return None


class Dedup(Pass):
    stateful = True


class Closer(Summary):
    stateful = False  # its finish() only closes a per-process resource


def _pipeline(*stages: dict[str, Any]) -> Pipeline:
    return Pipeline("p", [{"name": f"s{i}", **stage} for i, stage in enumerate(stages)])


def _groups(pipeline: Pipeline, **options: Any) -> list[tuple[list[str], int]]:
    return [([s.name for s in u.stages], u.workers) for u in pipeline.plan(**options).units]


def test_consecutive_stages_fuse_into_as_many_processes_as_they_ask_for() -> None:
    """Stages with workers 1, 2 and 1 become one group of 4 processes."""
    pipeline = _pipeline({"uses": Pass}, {"uses": Pass, "workers": 2}, {"uses": Pass})
    assert _groups(pipeline) == [(["s0", "s1", "s2"], 4)]
    assert pipeline.plan().boundaries == (None, None)


def test_stateful_stages_run_alone() -> None:
    """A stage overriding finish() or declaring stateful runs alone; stateful=False opts out."""
    pipeline = _pipeline(
        {"uses": Pass}, {"uses": Pass}, {"uses": Summary}, {"uses": Pass}, {"uses": Dedup}
    )
    assert _groups(pipeline) == [(["s0", "s1"], 2), (["s2"], 1), (["s3"], 1), (["s4"], 1)]
    assert pipeline.plan().boundaries == (None, "stateful", "stateful", "stateful")
    closing = _pipeline({"uses": Pass}, {"uses": Closer})
    assert _groups(closing) == [(["s0", "s1"], 2)]


def test_fuse_false_and_no_fuse_are_boundaries() -> None:
    """`fuse: false` isolates its stage; fuse=False isolates every stage."""
    pipeline = _pipeline({"uses": Pass}, {"uses": Pass, "fuse": False}, {"uses": Pass})
    assert _groups(pipeline) == [(["s0"], 1), (["s1"], 1), (["s2"], 1)]
    assert pipeline.plan().boundaries == ("fuse-false", "fuse-false")
    fusable = _pipeline({"uses": Pass}, {"uses": Pass})
    assert _groups(fusable, fuse=False) == [(["s0"], 1), (["s1"], 1)]
    assert fusable.plan(fuse=False).unit_of(1).index == 1


def test_validate_lists_fused_groups() -> None:
    """`stageflow validate` names the stages that share processes, after the usual line."""
    done = run_stageflow("validate", str(REPO / "examples" / "seed" / "pipeline.yaml"))
    assert done.returncode == 0, done.stderr
    assert "is valid (preprocess → analyze → collect)" in done.stdout
    assert "  fused: preprocess + analyze (4 processes)" in done.stdout


def test_an_autoscaled_stage_is_a_unit_of_its_own(tmp_path: Path) -> None:
    """`workers: {min, max}` is a fusion boundary both ways, and `stageflow validate` lists it."""
    pipeline = _pipeline(
        {"uses": Pass}, {"uses": Pass, "workers": {"min": 1, "max": 4}}, {"uses": Pass}
    )
    assert _groups(pipeline) == [(["s0"], 1), (["s1"], 1), (["s2"], 1)]
    assert pipeline.plan().boundaries == ("autoscaled", "autoscaled")
    assert [str(unit.bounds) for unit in pipeline.plan().units] == ["None", "1..4", "None"]
    path = tmp_path / "auto.yaml"
    path.write_text(
        "name: auto\nstages:\n  - {name: prep, uses: preprocessor}\n"
        "  - {name: stats, uses: analyzer, workers: {min: 1, max: 3, initial: 2}}\n",
        encoding="utf-8",
    )
    done = run_stageflow("validate", str(path))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[1:] == ["  autoscaled: stats (1..3 workers, 2 at the start)"]
