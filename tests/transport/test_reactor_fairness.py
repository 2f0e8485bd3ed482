"""The read loop yields to the reactor: a large burst does not freeze timers."""

from __future__ import annotations

import itertools
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from twisted.internet.task import LoopingCall

from stageflow.transport import ZmqEndpoint, ZmqEndpointType, ZmqFactory, ZmqPullConnection
from tests.transport.support import run_until

BURST = 200_000
TICK = 0.010

# The burst comes from another process, so the sender never competes for our GIL.
SENDER = """
import sys, zmq
context = zmq.Context()
out = context.socket(zmq.PUSH)
out.setsockopt(zmq.SNDHWM, 0)
out.connect(sys.argv[1])
for number in range(int(sys.argv[2])):
    out.send(b"%d" % number)
out.close(linger=-1)
context.term()
"""


class Counter(ZmqPullConnection):
    """Counts messages and remembers which arrived, as cheaply as it can."""

    def __init__(self, factory: ZmqFactory, endpoint: ZmqEndpoint) -> None:
        super().__init__(factory, endpoint)
        self.seen = bytearray(BURST)
        self.count = 0

    def onPull(self, message: list[bytes]) -> None:
        self.seen[int(message[0])] = 1
        self.count += 1


@pytest.fixture
def sender() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Holds the sender process started by the test; it is ended if still running."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)


def test_burst_keeps_timer_on_time_and_delivers_all(
    factory: ZmqFactory, reactor: Any, sender: list[subprocess.Popen[bytes]]
) -> None:
    """A 200k-message burst arrives while a 10 ms LoopingCall stays under 100 ms late.

    Lateness is charged to the transport only while the reactor thread was running: an
    interval counts as late by min(wall-clock lateness, reactor-thread CPU time in it), so
    an overloaded machine descheduling the test does not fail it, a hogging read loop does.
    """
    counter = Counter(factory, ZmqEndpoint(ZmqEndpointType.bind, "tcp://127.0.0.1:*"))
    ticks: list[tuple[float, float]] = []
    timer = LoopingCall(lambda: ticks.append((reactor.seconds(), time.thread_time())))
    timer.clock = reactor
    timer.start(TICK)
    sender.append(
        subprocess.Popen([sys.executable, "-c", SENDER, counter.addresses[0], str(BURST)])
    )
    try:
        run_until(reactor, lambda: counter.count == BURST, timeout=60)
    finally:
        timer.stop()
    assert sender[0].wait(timeout=10) == 0
    charged = [
        min(wall - earlier_wall - TICK, cpu - earlier_cpu)
        for (earlier_wall, earlier_cpu), (wall, cpu) in itertools.pairwise(ticks)
    ]
    wall_lateness = max(b[0] - a[0] - TICK for a, b in itertools.pairwise(ticks))
    assert counter.seen == bytearray(b"\x01") * BURST
    assert len(ticks) > 10
    assert max(charged) < 0.100, (
        f"timer was {max(charged) * 1000:.0f} ms late while the reactor ran "
        f"({wall_lateness * 1000:.0f} ms by the wall clock)"
    )
