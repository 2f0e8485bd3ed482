"""Fused stages in real worker processes: same results as unfused, failures named per stage."""

from __future__ import annotations

import json
from pathlib import Path

from stageflow import Pipeline
from tests.engine.stages import CountWords, FanOut, SecondPid, Split, StampPid
from tests.helpers import run_stageflow


def _words_pipeline(**split: object) -> Pipeline:
    return Pipeline(
        "words",
        [
            {"name": "split", "uses": Split, "workers": 2, "config": split},
            {"name": "fan", "uses": FanOut},
            {"name": "resplit", "uses": Split, "config": {"fail_on": "boom"}, "retries": 0},
            {"name": "count", "uses": CountWords},
        ],
    )


def test_fused_and_unfused_runs_give_identical_results_and_counts() -> None:
    """The same pipeline fused and unfused: equal results, dead letters and per-stage counts."""
    items = [
        {"id": str(i), "text": " ".join(["w"] * (i % 4)) + (" boom" if i == 7 else "")}
        for i in range(300)
    ]
    runs = {}
    for fuse in (True, False):
        run = _words_pipeline().run(items, fuse=fuse, max_errors=1)
        results = sorted(result.model_dump_json() for result in run)
        runs[fuse] = (results, run.report.dead_letters, run.report.processed)
    assert runs[True] == runs[False]
    results, (entry,), processed = runs[True]
    assert len(results) == sum(i % 4 for i in range(300))
    assert (entry["stage"], entry["line"], entry["record"]) == (
        "resplit",
        8,
        {"id": "7.3", "text": "boom"},
    )
    assert processed["split"] == 300 and processed["count"] == len(results)


def test_a_fused_group_runs_in_one_process_and_no_fuse_splits_it(tmp_path: Path) -> None:
    """Fused, both stages see a record in the same process; with --no-fuse, never."""
    pipe = tmp_path / "pids.yaml"
    pipe.write_text(
        json.dumps(
            {
                "name": "pids",
                "stages": [
                    {"name": "first", "uses": "tests.engine.stages:StampPid", "workers": 2},
                    {"name": "second", "uses": "tests.engine.stages:SecondPid"},
                ],
            }
        )
    )
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"id": str(i), "text": "x"}) + "\n" for i in range(200)))
    fused = Pipeline("pids", [{"name": "a", "uses": StampPid}, {"name": "b", "uses": SecondPid}])
    assert all(
        r.first_pid == r.second_pid
        for r in fused.run({"id": str(i), "text": "x"} for i in range(50))
    )
    done = run_stageflow("run", str(pipe), "-i", str(source), "--no-fuse")
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(rows) == 200 and all(r["first_pid"] != r["second_pid"] for r in rows)


def test_poison_inside_a_fused_group_names_the_stage_it_killed() -> None:
    """A record whose second stage kills the worker is set aside under that stage's name."""
    pipeline = Pipeline(
        "poison",
        [
            {"name": "fan", "uses": FanOut, "workers": 2},
            {"name": "crash", "uses": Split, "config": {"crash_on": "poison"}},
        ],
    )
    items = [{"id": str(i), "words": ["poison"] if i == 30 else ["a"]} for i in range(100)]
    run = pipeline.run(items, max_errors=1)
    assert sorted(int(r.id.split(".")[0]) for r in run) == [i for i in range(100) if i != 30]
    (entry,) = run.report.dead_letters
    assert (entry["stage"], entry["line"], entry["error"]) == ("crash", 31, "PoisonRecord")
