"""Malformed frames from a peer: dropped, and the workers stay up (hypothesis-fuzzed)."""

from __future__ import annotations

import json
import struct

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


@pytest.fixture(scope="module")
def live_pipeline():  # type: ignore[no-untyped-def]
    """A started coordinator whose workers stay up for the whole fuzz run."""
    pipeline = Pipeline(
        "fuzz", [{"name": "split", "uses": Split}, {"name": "count", "uses": CountWords}]
    )
    coordinator = Coordinator(pipeline, RunReport("fuzz"), EngineOptions(fuse=False))
    coordinator.start()
    context = zmq.Context()
    pushers = []
    for stage_slots in coordinator.pool.slots:
        member = stage_slots[0].member
        assert member is not None
        sock = context.socket(zmq.PUSH)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(member.address or "")
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
    return struct.pack("<2sBBI", b"SF", wire.VERSION, kind, len(body)) + rest


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
@given(
    frame=frames,
    stage=st.integers(min_value=0, max_value=1),
    signed=st.booleans(),
    framed=st.booleans(),
)
def test_malformed_frames_never_crash_a_worker(  # type: ignore[no-untyped-def]
    live_pipeline, frame: list[bytes], stage: int, signed: bool, framed: bool
) -> None:
    """Garbage, wrong headers and wrong versions are dropped, signed or not; workers stay up."""
    coordinator, pushers = live_pipeline
    if signed:  # as if a bug in stageflow itself built it: it must still be parsed safely
        frame = wire.sign(list(frame), coordinator.secret)
    if framed:  # behind a frame id, as the coordinator sends them: they reach the parser
        frame = [(2**40).to_bytes(8, "little"), *frame]
    pushers[stage].send_multipart(frame or [b""])
    for member in coordinator.membership.members.values():
        assert member.process is not None and member.process.poll() is None


def test_workers_still_process_after_the_fuzzing(live_pipeline) -> None:  # type: ignore[no-untyped-def]
    """After all that garbage the same workers still turn records into results."""
    coordinator, _ = live_pipeline
    pids = sorted(m.pid for m in coordinator.membership.members.values())
    source = iter([(1, b'{"id":"x","text":"a b c"}'), (2, b'{"id":"y","text":"d"}')])
    results = sorted(json.loads(line)["words"] for line in coordinator.run(source))
    assert results == [1, 3]
    assert sorted(m.pid for m in coordinator.membership.members.values()) == pids
    assert coordinator.report.worker_restarts == 0
