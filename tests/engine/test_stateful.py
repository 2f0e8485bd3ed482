"""Stateful stages: keyed routing, no double counting, and a loud end when state is lost."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from hashlib import blake2b
from pathlib import Path
from typing import Any

import pytest

from stageflow import Pipeline
from stageflow.cli import EXIT_STATE_LOST
from stageflow.engine.keying import slot_of
from stageflow.observe.report_json import report_document
from tests.engine.stages import Relay, SnapTally, Tally
from tests.helpers import run_stageflow


def lines(n: int, keys: int) -> Iterator[dict[str, str]]:
    for i in range(n):
        yield {"id": str(i), "text": f"k{i % keys}"}


def tally_pipeline(relay: dict[str, Any], tally: dict[str, Any]) -> Pipeline:
    return Pipeline(
        "tally",
        [
            {"name": "relay", "uses": Relay, "workers": 2, **relay},
            {"name": "tally", "uses": Tally, "workers": 2, "key": "text", **tally},
        ],
    )


class StormFeed:
    """Records that keep coming until ``kills`` holds ``wanted`` pids (or a minute passed),
    then ``after`` more: the storm happens while records flow, however fast the run is."""

    def __init__(self, keys: int, kills: list[int], wanted: int, after: int = 5000) -> None:
        self.keys, self.kills, self.wanted, self.after = keys, kills, wanted, after
        self.count = 0  # how many it gave

    def __iter__(self) -> Iterator[dict[str, str]]:
        end: int | None = None
        give_up = time.monotonic() + 60
        while end is None or self.count < end:
            if end is None and (len(self.kills) >= self.wanted or time.monotonic() > give_up):
                end = self.count + self.after
            yield {"id": str(self.count), "text": f"k{self.count % self.keys}"}
            self.count += 1


def expected(n: int, keys: int) -> dict[str, int]:
    return dict(Counter(f"k{i % keys}" for i in range(n)))


def totals(results: list[Any]) -> dict[str, int]:
    ids = [r.id for r in results]
    assert len(ids) == len(set(ids)), "a key was counted by more than one worker"
    return {r.id: r.total for r in results}


def kill_storm(run: Any, stage: str, kills: list[int], wanted: int, done: threading.Event) -> None:
    """kill -9 ``wanted`` ready workers of ``stage`` that have processed something."""
    while len(kills) < wanted and not done.is_set():
        ready = [
            w
            for w in run.workers()
            if w.stage == stage and w.state == "ready" and w.pid not in kills and w.processed
        ]
        if ready and ready[0].pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(ready[0].pid, signal.SIGKILL)
            kills.append(ready[0].pid)
        done.wait(0.3)  # the pace of the storm, not a synchronisation


def test_slot_is_blake2b_of_the_canonical_json_of_the_key() -> None:
    """The documented hash: BLAKE2b-64 of the key's canonical JSON, little-endian, mod slots."""
    record = b'{"id": "1", "user": {"name": "\xc3\xa9va", "tags": {"b": 1, "a": 2}}}'
    for path, value in ((("user", "name"), '"éva"'), (("user", "tags"), '{"a":2,"b":1}')):
        digest = blake2b(value.encode(), digest_size=8).digest()
        assert slot_of(record, path, 7) == int.from_bytes(digest, "little") % 7
    null = int.from_bytes(blake2b(b"null", digest_size=8).digest(), "little") % 5
    assert slot_of(record, ("user", "missing"), 5) == null
    assert slot_of(b"not json", ("id",), 5) == null


def test_keyed_stage_sends_each_key_to_one_worker_and_cannot_be_scaled() -> None:
    """With 3 workers keyed by text, each key is counted by one worker, exactly; no scaling."""
    run = tally_pipeline({}, {"workers": 3}).run(lines(3000, 40))
    with pytest.raises(ValueError, match=r"keyed by 'text'.*fixed for the run"):
        run.scale("tally", 4)
    assert totals(list(run)) == expected(3000, 40)
    assert run.report.ok and run.report.finish_exact


@pytest.mark.timeout(120)
def test_upstream_kills_keep_every_per_key_count_exact() -> None:
    """kill -9 of the upstream workers 4 times while records flow: every count exact, ok."""
    keys = 101
    kills: list[int] = []
    feed = StormFeed(keys, kills, 4)
    run = tally_pipeline({}, {}).run(feed)
    done = threading.Event()
    killer = threading.Thread(target=kill_storm, args=(run, "relay", kills, 4, done))
    killer.start()
    try:
        results = list(run)
    finally:
        done.set()
        killer.join()
    assert len(kills) == 4, "the storm did not end within a minute"
    assert totals(results) == expected(feed.count, keys)
    report = run.report
    assert report.ok and report.finish_exact and report.worker_restarts == 4
    assert report.redeliveries > 0 and report.stateful_redelivered == 0


@pytest.mark.timeout(120)
def test_killed_counting_workers_with_snapshots_keep_every_count_exact() -> None:
    """kill -9 of the keyed counting workers 3 times, with snapshot hooks: exact, ok."""
    keys = 53
    kills: list[int] = []
    feed = StormFeed(keys, kills, 3)
    pipeline = Pipeline(
        "snap",
        [
            {"name": "relay", "uses": Relay, "workers": 2},
            {"name": "tally", "uses": SnapTally, "workers": 2, "key": "text"},
        ],
    )
    run = pipeline.run(feed, snapshot_every=1000, snapshot_seconds=0.2)
    done = threading.Event()
    killer = threading.Thread(target=kill_storm, args=(run, "tally", kills, 3, done))
    killer.start()
    try:
        results = list(run)
    finally:
        done.set()
        killer.join()
    assert len(kills) == 3, "the storm did not end within a minute"
    assert totals(results) == expected(feed.count, keys)
    report = run.report
    assert report.ok and report.finish_exact, report.reason
    assert report.snapshots_taken > 0 and report.snapshots_restored > 0
    assert report.stateful_redelivered > 0


@pytest.mark.timeout(90)
def test_records_given_again_past_a_stuck_worker_are_not_counted_twice() -> None:
    """Records speculated past a stuck upstream record enter the stateful stage only once."""
    n, keys = 3000, 17
    pipeline = tally_pipeline({"config": {"hang_on": "5", "hang_for": 2.5}}, {})
    run = pipeline.run(lines(n, keys), stuck_after=0.5, heartbeat_timeout=2.0)
    assert totals(list(run)) == expected(n, keys)
    report = run.report
    # The scenario did happen: records went round twice, and the second came to the door.
    assert report.redeliveries > 0 and report.duplicates_refused > 0
    assert report.ok and report.finish_exact


def test_a_lost_stateful_worker_makes_the_run_fail_and_say_why(tmp_path: Path) -> None:
    """A tally worker killed after reporting records: ok is false, the reason names the stage."""
    marker = tmp_path / "crashed"
    tally = {"config": {"crash_after": 700, "crash_marker": str(marker)}}
    run = tally_pipeline({}, tally).run(lines(4000, 9))
    list(run)
    assert marker.exists()
    report = run.report
    assert not report.ok and not report.finish_exact
    assert report.reason is not None
    assert "stage 'tally' lost the state" in report.reason
    assert "finish() output would be wrong" in report.reason
    document = report_document(report)
    assert document.outcome == "state-lost" and not document.stateful.finish_exact
    assert document.stateful.state_lost == report.state_lost


def test_cli_exits_with_the_state_lost_status(tmp_path: Path) -> None:
    """`stageflow run` ends with status 5 and one line naming the stage, never 0."""
    marker = tmp_path / "crashed"
    pipe = tmp_path / "pipe.yaml"
    pipe.write_text(
        json.dumps(
            {
                "name": "tally",
                "stages": [
                    {"name": "relay", "uses": "tests.engine.stages:Relay", "workers": 2},
                    {
                        "name": "tally",
                        "uses": "tests.engine.stages:Tally",
                        "workers": 2,
                        "key": "text",
                        "config": {"crash_after": 700, "crash_marker": str(marker)},
                    },
                ],
            }
        )
    )
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in lines(4000, 9)))
    out = tmp_path / "out.jsonl"
    done = run_stageflow("run", str(pipe), "-i", str(source), "-o", str(out))
    assert done.returncode == EXIT_STATE_LOST == 5, done.stderr
    said = [line for line in done.stderr.splitlines() if "finish() output would be wrong" in line]
    assert len(said) == 1 and "stage 'tally'" in said[0], done.stderr
    assert marker.exists()


def nested_pipeline(tmp_path: Path, key: str) -> Path:
    path = tmp_path / "nested.yaml"
    stage = {"name": "per-user", "uses": "tests.engine.stages:PerUser", "key": key}
    path.write_text(json.dumps({"name": "nested", "stages": [{**stage, "stateful": True}]}))
    return path


def test_validate_accepts_a_nested_key(tmp_path: Path) -> None:
    """`key: user.name` through an optional nested model is valid."""
    done = run_stageflow("validate", str(nested_pipeline(tmp_path, "user.name")))
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(
    ("key", "says"),
    [
        ("user.nope", "key 'user.nope': User has no field 'nope' (its fields: name); fix `key:`"),
        ("nope", "key 'nope': Event has no field 'nope' (its fields: id, user); fix `key:`"),
        ("id.x", "key 'id.x': 'id' is not a model, so it has no field 'x'; fix `key:`"),
    ],
)
def test_validate_rejects_a_key_the_input_lacks(tmp_path: Path, key: str, says: str) -> None:
    """A key naming no field of the stage's Input is refused with one line."""
    done = run_stageflow("validate", str(nested_pipeline(tmp_path, key)))
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f"stageflow: error: stage 'per-user': {says}"]
