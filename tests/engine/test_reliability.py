"""Nothing lost: worker deaths, poison records, hangs and malformed frames."""

from __future__ import annotations

import json
import random
import struct
import subprocess
import sys
import time
import zlib
from collections import Counter
from pathlib import Path

import psutil
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stageflow import Pipeline
from stageflow.engine import wire
from stageflow.engine.coordinator import Coordinator, EngineOptions
from stageflow.engine.report import RunReport
from tests.engine.conftest import live_children, wait_until
from tests.engine.stages import CountWords, Split
from tests.engine.test_cli_run import count_lines, write_lines
from tests.helpers import REPO


def test_chaos_kill_9_during_a_run_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    """Workers of every stage killed with SIGKILL, again and again: every result exactly once."""
    total = 50_000
    source = write_lines(tmp_path / "in.jsonl", total)
    out = tmp_path / "out.jsonl"
    pipe = tmp_path / "chaos.yaml"
    pipe.write_text(
        json.dumps(
            {
                "name": "chaos",
                "stages": [
                    {
                        "name": "split",
                        "uses": "tests.engine.stages:Split",
                        "workers": 2,
                        "config": {"pause": 0.0001},
                    },
                    {"name": "count", "uses": "tests.engine.stages:CountWords", "workers": 2},
                ],
            }
        )
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "stageflow", "run", str(pipe), "-i", str(source), "-o", str(out)],
        cwd=REPO,
        stderr=subprocess.PIPE,
    )
    parent = psutil.Process(proc.pid)
    rng = random.Random(7)
    kills = 0
    while proc.poll() is None and kills < 12:
        if count_lines(out) < 2_000 * (kills + 1):
            time.sleep(0.02)  # poll the progress, with a deadline given by pytest-timeout
            continue
        workers = [c for c in parent.children() if c.status() != psutil.STATUS_ZOMBIE]
        if workers:
            victim = rng.choice(workers)
            try:
                victim.kill()
            except psutil.NoSuchProcess:
                continue
            kills += 1
    _, err = proc.communicate(timeout=240)
    stderr = err.decode()
    assert proc.returncode == 0, stderr[-2000:]
    assert kills >= 5, f"only {kills} kills happened; the run was too short to test anything"
    assert stderr.count("exited with status -9") == kills
    ids = Counter(json.loads(line)["id"] for line in out.read_text().splitlines())
    assert len(ids) == total and set(ids.values()) == {1}


def test_poison_record_is_dead_lettered_after_three_deaths(tmp_path: Path) -> None:
    """A record that kills every worker it touches is set aside after 3 deaths; the rest pass."""
    pipeline = Pipeline(
        "poison",
        [
            {"name": "split", "uses": Split, "workers": 2, "config": {"crash_on": "poison"}},
            {"name": "count", "uses": CountWords},
        ],
    )
    items = [{"id": str(i), "text": "poison" if i == 300 else "a b"} for i in range(1000)]
    run = pipeline.run(items, max_errors=1)
    ids = [result.id for result in run]
    assert sorted(ids, key=int) == [str(i) for i in range(1000) if i != 300]
    (entry,) = run.report.dead_letters
    assert entry["line"] == 301 and entry["error"] == "PoisonRecord"
    assert entry["record"] == {"id": "300", "text": "poison"}
    assert run.report.worker_restarts == 3 and run.report.ok


def test_hanging_record_times_out(tmp_path: Path) -> None:
    """A process() call that hangs is cut off by the stage timeout and dead-lettered."""
    pipeline = Pipeline(
        "hang",
        [{"name": "split", "uses": Split, "timeout": 0.5, "config": {"hang_on": "zzz"}}],
    )
    items = [{"id": "1", "text": "a"}, {"id": "2", "text": "zzz"}, {"id": "3", "text": "b c"}]
    run = pipeline.run(items, max_errors=1)
    assert sorted(r.id for r in run) == ["1", "3"]
    (entry,) = run.report.dead_letters
    assert entry["line"] == 2 and entry["error"] == "RecordTimeout"


@pytest.fixture(scope="module")
def live_pipeline():  # type: ignore[no-untyped-def]
    """A started coordinator whose workers stay up for the whole fuzz run."""
    pipeline = Pipeline(
        "fuzz", [{"name": "split", "uses": Split}, {"name": "count", "uses": CountWords}]
    )
    coordinator = Coordinator(pipeline, RunReport("fuzz"), EngineOptions())
    coordinator.start()
    context = zmq.Context()
    pushers = []
    for slot in (coordinator.slots[0][0], coordinator.slots[1][0]):
        sock = context.socket(zmq.PUSH)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(slot.address or "")
        pushers.append(sock)
    try:
        yield coordinator, pushers
    finally:
        for sock in pushers:
            sock.close(linger=0)
        context.term()
        coordinator.close()
    assert wait_until(lambda: not live_children(), timeout=10)


def _head(kind: int, body: bytes, rest: bytes) -> bytes:
    return struct.pack("<2sBBII", b"SF", wire.VERSION, kind, len(body), zlib.crc32(body)) + rest


ids = st.lists(st.integers(min_value=-(2**63), max_value=-1), max_size=9).map(wire.pack_ints)
frames = st.one_of(
    st.lists(st.binary(max_size=64), min_size=0, max_size=4),
    st.tuples(st.binary(max_size=64), st.binary(max_size=64)).map(list),
    # Well-formed heads (right magic, version and payload check) over garbage or odd ids:
    # these get as far as the record parser.
    st.tuples(st.integers(0, 1), ids | st.binary(max_size=30), st.binary(max_size=64)).map(
        lambda t: [_head(t[0], t[2], t[1]), t[2]]
    ),
)


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(frame=frames, stage=st.integers(min_value=0, max_value=1), signed=st.booleans())
def test_malformed_frames_never_crash_a_worker(  # type: ignore[no-untyped-def]
    live_pipeline, frame: list[bytes], stage: int, signed: bool
) -> None:
    """Garbage, wrong headers and wrong versions are dropped, signed or not; workers stay up."""
    coordinator, pushers = live_pipeline
    if signed:  # as if a bug in stageflow itself built it: it must still be parsed safely
        frame = wire.sign(list(frame), coordinator.secret)
    pushers[stage].send_multipart(frame or [b""])
    for stage_slots in coordinator.slots:
        assert stage_slots[0].proc.poll() is None


def test_workers_still_process_after_the_fuzzing(live_pipeline) -> None:  # type: ignore[no-untyped-def]
    """After all that garbage the same workers still turn records into results."""
    coordinator, _ = live_pipeline
    pids = [s[0].proc.pid for s in coordinator.slots]
    source = iter([(1, b'{"id":"x","text":"a b c"}'), (2, b'{"id":"y","text":"d"}')])
    results = sorted(json.loads(line)["words"] for line in coordinator.run(source))
    assert results == [1, 3]
    assert [s[0].proc.pid for s in coordinator.slots] == pids
    assert coordinator.report.worker_restarts == 0
