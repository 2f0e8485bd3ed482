"""The read loop yields to the reactor: a large burst does not freeze timers."""

from __future__ import annotations

import itertools
import threading
from typing import Any

import zmq
from twisted.internet.task import LoopingCall

from stageflow.transport import ZmqEndpoint, ZmqEndpointType, ZmqFactory, ZmqPullConnection
from tests.transport.support import run_until

BURST = 200_000
TICK = 0.010


class Counter(ZmqPullConnection):
    """Counts messages and remembers which arrived, as cheaply as it can."""

    def __init__(self, factory: ZmqFactory, endpoint: ZmqEndpoint) -> None:
        super().__init__(factory, endpoint)
        self.seen = bytearray(BURST)
        self.count = 0

    def onPull(self, message: list[bytes]) -> None:
        self.seen[int(message[0])] = 1
        self.count += 1


def test_burst_keeps_timer_on_time_and_delivers_all(
    factory: ZmqFactory, reactor: Any, raw_socket: Any
) -> None:
    """A 200k-message burst arrives while a 10 ms LoopingCall stays under 100 ms late."""
    counter = Counter(factory, ZmqEndpoint(ZmqEndpointType.bind, "tcp://127.0.0.1:*"))
    ticks: list[float] = []
    timer = LoopingCall(lambda: ticks.append(reactor.seconds()))
    timer.clock = reactor
    timer.start(TICK)
    source = raw_socket(zmq.PUSH)
    source.setsockopt(zmq.SNDHWM, 0)
    source.connect(counter.addresses[0])
    payloads = [b"%d" % n for n in range(BURST)]
    # The whole burst is queued in ZeroMQ as fast as the sender can go, independent of
    # how fast the reactor reads.
    sender = threading.Thread(target=lambda: [source.send(p) for p in payloads])
    sender.start()
    try:
        run_until(reactor, lambda: counter.count == BURST, timeout=60)
    finally:
        sender.join()
        timer.stop()
    lateness = max(later - earlier - TICK for earlier, later in itertools.pairwise(ticks))
    assert counter.seen == bytearray(b"\x01") * BURST
    assert len(ticks) > 10
    assert lateness < 0.100, f"timer was {lateness * 1000:.0f} ms late"
