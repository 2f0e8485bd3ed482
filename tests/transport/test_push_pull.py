"""Push/pull on real ZeroMQ sockets and a private reactor per test."""

from __future__ import annotations

import threading
from typing import Any

import pytest
import zmq
from twisted.logger import LogEvent, globalLogPublisher
from twisted.python.failure import Failure

import stageflow.transport
from stageflow.transport import (
    ZmqEndpoint,
    ZmqEndpointType,
    ZmqFactory,
    ZmqPullConnection,
    ZmqPushConnection,
)
from tests.transport.support import BIND_ANY, connect, run_until


class Collector(ZmqPullConnection):
    """A pull connection that keeps what it receives."""

    def __init__(self, factory: ZmqFactory, endpoint: ZmqEndpoint) -> None:
        super().__init__(factory, endpoint)
        self.received: list[list[bytes]] = []

    def onPull(self, message: list[bytes]) -> None:
        self.received.append(message)


def test_all_is_sorted_and_complete() -> None:
    """The package exports exactly txZMQ 1.0.0's public names, in a sorted __all__."""
    assert stageflow.transport.__all__ == sorted(stageflow.transport.__all__)
    assert set(stageflow.transport.__all__) == {
        "ZmqConnection",
        "ZmqDealerConnection",
        "ZmqEndpoint",
        "ZmqEndpointType",
        "ZmqFactory",
        "ZmqPubConnection",
        "ZmqPullConnection",
        "ZmqPushConnection",
        "ZmqREPConnection",
        "ZmqREQConnection",
        "ZmqRequestTimeoutError",
        "ZmqRouterConnection",
        "ZmqSubConnection",
    }


def test_three_workers_each_message_once_fair_share(factory: ZmqFactory, reactor: Any) -> None:
    """3000 messages over 3 workers arrive exactly once each, within ±20% of equal shares."""
    workers = [Collector(factory, BIND_ANY) for _ in range(3)]
    # The PUSH side connects to every worker before sending: its pipes exist from
    # connect() on, so round-robin is exact instead of racing the slow joiner.
    pusher = ZmqPushConnection(factory, [connect(w.addresses[0]) for w in workers])
    for number in range(3000):
        pusher.push(b"%d" % number)
    run_until(reactor, lambda: sum(len(w.received) for w in workers) == 3000)
    everything = [m[0] for w in workers for m in w.received]
    assert sorted(everything) == sorted(b"%d" % n for n in range(3000))
    for worker in workers:
        assert 800 <= len(worker.received) <= 1200


def test_multipart_arrives_whole(factory: ZmqFactory, reactor: Any) -> None:
    """A multipart push arrives as one list with every frame, empty frames included."""
    puller = Collector(factory, BIND_ANY)
    pusher = ZmqPushConnection(factory, connect(puller.addresses[0]))
    pusher.push([b"head", b"", b"tail"])
    pusher.push(b"single")
    pusher.push([b"one"])
    run_until(reactor, lambda: len(puller.received) == 3)
    assert puller.received == [[b"head", b"", b"tail"], [b"single"], [b"one"]]


def test_single_frame_mode_delivers_each_frame(factory: ZmqFactory, reactor: Any) -> None:
    """With singleFrame, every frame is its own message, in order, multipart ones split."""

    class FrameCollector(Collector):
        singleFrame = True

    puller = FrameCollector(factory, BIND_ANY)
    pusher = ZmqPushConnection(factory, connect(puller.addresses[0]))
    for n in range(1200):  # more than one read slice
        pusher.push(b"%d" % n)
    pusher.push([b"head", b"tail"])
    run_until(reactor, lambda: len(puller.received) == 1202)
    assert puller.received[:1200] == [[b"%d" % n] for n in range(1200)]
    assert puller.received[1200:] == [[b"head"], [b"tail"]]


@pytest.mark.parametrize("address", ["tcp://127.0.0.1:*", "tcp://*:*"])
def test_wildcard_port_resolves_at_once(factory: ZmqFactory, reactor: Any, address: str) -> None:
    """Binding to port * picks a free port, listed in addresses right after construction."""
    first = Collector(factory, ZmqEndpoint(ZmqEndpointType.bind, address))
    second = Collector(factory, ZmqEndpoint(ZmqEndpointType.bind, address))
    ports = [int(c.addresses[0].rsplit(":", 1)[1]) for c in (first, second)]
    assert all(port > 0 for port in ports) and ports[0] != ports[1]
    target = first.addresses[0].replace("0.0.0.0", "127.0.0.1")
    ZmqPushConnection(factory, connect(target)).push(b"hello")
    run_until(reactor, lambda: first.received == [[b"hello"]])


def test_ipc_transport(factory: ZmqFactory, reactor: Any, tmp_path: Any) -> None:
    """ipc:// endpoints carry messages like tcp does."""
    puller = Collector(factory, ZmqEndpoint(ZmqEndpointType.bind, f"ipc://{tmp_path}/sock"))
    assert puller.addresses == [f"ipc://{tmp_path}/sock"]
    ZmqPushConnection(factory, connect(puller.addresses[0])).push(b"over ipc")
    run_until(reactor, lambda: puller.received == [[b"over ipc"]])


def test_inproc_transport(factory: ZmqFactory, reactor: Any) -> None:
    """inproc:// endpoints work, even when the push side is made first."""
    pusher = ZmqPushConnection(factory, ZmqEndpoint(ZmqEndpointType.bind, "inproc://test-inproc"))
    puller = Collector(factory, connect("inproc://test-inproc"))
    pusher.push(b"in process")
    run_until(reactor, lambda: puller.received == [[b"in process"]])


def test_remove_endpoint_by_resolved_address(factory: ZmqFactory, reactor: Any) -> None:
    """remove_endpoint undoes a wildcard bind named by its resolved address."""
    puller = Collector(factory, BIND_ANY)
    address = puller.addresses[0]
    puller.remove_endpoint(address)
    assert puller.addresses == []
    with pytest.raises(ValueError, match="no endpoint"):
        puller.remove_endpoint(address)


def test_onpull_error_is_logged_with_message_and_reading_goes_on(
    factory: ZmqFactory, reactor: Any
) -> None:
    """An exception in onPull is logged with the message and later messages still arrive."""

    class Fussy(Collector):
        def onPull(self, message: list[bytes]) -> None:
            if message == [b"bad"]:
                raise ValueError("cannot handle this")
            super().onPull(message)

    events: list[LogEvent] = []
    globalLogPublisher.addObserver(events.append)
    try:
        puller = Fussy(factory, BIND_ANY)
        pusher = ZmqPushConnection(factory, connect(puller.addresses[0]))
        for message in (b"good", b"bad", b"after"):
            pusher.push(message)
        run_until(reactor, lambda: len(puller.received) == 2)
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert puller.received == [[b"good"], [b"after"]]
    [event] = [e for e in events if "log_failure" in e]
    assert event["message"] == "[b'bad']"
    assert event["log_failure"].check(ValueError)


def test_on_message_error_override_receives_message_and_failure(
    factory: ZmqFactory, reactor: Any
) -> None:
    """on_message_error gets the failed message and its Failure, so the engine can route it."""
    failed: list[tuple[list[bytes], Failure]] = []

    class Routing(ZmqPullConnection):
        def onPull(self, message: list[bytes]) -> None:
            raise KeyError(message[0])

        def on_message_error(self, message: list[bytes], failure: Failure) -> None:
            failed.append((message, failure))

    puller = Routing(factory, BIND_ANY)
    ZmqPushConnection(factory, connect(puller.addresses[0])).push([b"x", b"y"])
    run_until(reactor, lambda: len(failed) == 1)
    assert failed[0][0] == [b"x", b"y"] and failed[0][1].check(KeyError)


def test_flushed_fires_once_buffer_drains(factory: ZmqFactory, reactor: Any) -> None:
    """flushed() fires after buffered messages were handed to ZeroMQ, none lost."""
    puller = Collector(factory, BIND_ANY)

    class Small(ZmqPushConnection):
        highWaterMark = 5

    pusher = Small(factory, connect(puller.addresses[0]))
    for number in range(500):
        pusher.push(b"%d" % number)
    fired: list[object] = []
    pusher.flushed().addCallback(fired.append)
    run_until(reactor, lambda: bool(fired) and len(puller.received) == 500)
    assert pusher.buffered == 0
    assert [m[0] for m in puller.received] == [b"%d" % n for n in range(500)]


def test_pull_pauses_while_push_buffer_full_and_loses_nothing(
    factory: ZmqFactory, reactor: Any, raw_socket: Any
) -> None:
    """A pull→push stage stops reading while downstream is full, and every message survives."""

    class Downstream(ZmqPushConnection):
        highWaterMark = 10
        outgoingBufferLimit = 100

    class Stage(ZmqPullConnection):
        def __init__(self, factory: ZmqFactory, endpoint: ZmqEndpoint, out: str) -> None:
            super().__init__(factory, endpoint)
            self.out = Downstream(factory, connect(out))
            self.out.registerProducer(self, streaming=True)
            self.paused_seen = False

        def onPull(self, message: list[bytes]) -> None:
            self.out.push(message)

        def pauseProducing(self) -> None:
            self.paused_seen = True
            super().pauseProducing()

    sink = raw_socket(zmq.PULL)
    sink.setsockopt(zmq.RCVHWM, 10)
    sink_address = bind_raw(sink)
    source = raw_socket(zmq.PUSH)
    stage = Stage(factory, BIND_ANY, sink_address)
    source.connect(stage.addresses[0])
    total = 5000
    sender = threading.Thread(target=lambda: [source.send(b"%d" % n) for n in range(total)])
    sender.start()
    run_until(reactor, lambda: stage.paused_seen)
    assert stage.out.buffered <= Downstream.outgoingBufferLimit
    received: list[bytes] = []

    def drain_sink() -> bool:
        while True:
            try:
                received.append(sink.recv(zmq.NOBLOCK))
            except zmq.Again:
                return len(received) == total

    run_until(reactor, drain_sink, timeout=30)
    sender.join()
    assert received == [b"%d" % n for n in range(total)]
    assert stage.out.buffered <= Downstream.outgoingBufferLimit


def test_push_never_raises_again_when_buffer_overflows(
    factory: ZmqFactory, raw_socket: Any
) -> None:
    """Pushing past HWM and buffer limit, ignoring flow control, blocks but loses nothing."""

    class Tiny(ZmqPushConnection):
        highWaterMark = 10
        outgoingBufferLimit = 50

    sink = raw_socket(zmq.PULL)
    sink.setsockopt(zmq.RCVHWM, 10)
    sink.setsockopt(zmq.RCVTIMEO, 10_000)
    address = bind_raw(sink)
    total = 3000
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: [received.append(sink.recv()) for _ in range(total)])
    reader.start()
    pusher = Tiny(factory, connect(address))
    for number in range(total):
        pusher.push(b"%d" % number)
    assert pusher.buffered <= Tiny.outgoingBufferLimit
    pusher.shutdown()
    reader.join()
    assert received == [b"%d" % n for n in range(total)]


def test_shutdown_delivers_everything_pushed(factory: ZmqFactory, raw_socket: Any) -> None:
    """shutdown() right after pushing flushes the buffer so a connected peer gets it all."""

    class Small(ZmqPushConnection):
        highWaterMark = 10

    sink = raw_socket(zmq.PULL)
    sink.setsockopt(zmq.RCVTIMEO, 10_000)
    address = bind_raw(sink)
    pusher = Small(factory, connect(address))
    for number in range(2000):
        pusher.push(b"%d" % number)
    assert pusher.buffered > 0
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: [received.append(sink.recv()) for _ in range(2000)])
    reader.start()
    pusher.shutdown()
    reader.join()
    assert pusher.closed and pusher not in factory.connections
    assert received == [b"%d" % n for n in range(2000)]


def test_factory_shutdown_is_bounded_without_peers(reactor: Any) -> None:
    """factory.shutdown() returns promptly even when a push has no peer to flush to."""
    import time

    class Stuck(ZmqPushConnection):
        highWaterMark = 1
        flushTimeout = 0.2
        linger = 0

    factory = ZmqFactory(reactor=reactor)
    pusher = Stuck(factory, BIND_ANY)
    Collector(factory, BIND_ANY)
    for number in range(10):
        pusher.push(b"%d" % number)
    started = time.monotonic()
    factory.shutdown()
    assert time.monotonic() - started < 2
    assert factory.connections == set() and factory.context.closed


def bind_raw(socket: zmq.Socket[bytes]) -> str:
    """Bind a raw test socket to a free loopback port and return its address."""
    socket.setsockopt(zmq.LINGER, 0)
    socket.bind("tcp://127.0.0.1:*")
    return socket.getsockopt_string(zmq.LAST_ENDPOINT)


def test_buffer_waiting_for_first_peer_drains_once_connected(
    factory: ZmqFactory, reactor: Any
) -> None:
    """Messages pushed before any peer exists are delivered once an endpoint is added."""
    pusher = ZmqPushConnection(factory)
    for number in range(100):
        pusher.push(b"%d" % number)
    assert pusher.buffered == 100
    # inproc: connecting attaches the pipe at once and signals nothing on the FD.
    puller = Collector(factory, ZmqEndpoint(ZmqEndpointType.bind, "inproc://first-peer"))
    pusher.addEndpoints([connect("inproc://first-peer")])
    run_until(reactor, lambda: len(puller.received) == 100)
    assert [m[0] for m in puller.received] == [b"%d" % n for n in range(100)]


def test_remove_endpoint_stops_routing_to_that_peer(factory: ZmqFactory, reactor: Any) -> None:
    """After remove_endpoint, later messages go only to the peers still connected."""
    kept, dropped = Collector(factory, BIND_ANY), Collector(factory, BIND_ANY)
    pusher = ZmqPushConnection(factory, [connect(kept.addresses[0]), connect(dropped.addresses[0])])
    pusher.remove_endpoint(dropped.addresses[0])
    assert pusher.addresses == [kept.addresses[0]]
    for number in range(50):
        pusher.push(b"%d" % number)
    run_until(reactor, lambda: len(kept.received) == 50)
    assert dropped.received == []


def test_failing_error_handler_does_not_stop_reading(factory: ZmqFactory, reactor: Any) -> None:
    """Even when on_message_error itself raises, the connection logs it and keeps reading."""

    class Clumsy(Collector):
        def onPull(self, message: list[bytes]) -> None:
            if message == [b"bad"]:
                raise ValueError("bad message")
            super().onPull(message)

        def on_message_error(self, message: list[bytes], failure: Failure) -> None:
            raise RuntimeError("the handler broke too")

    events: list[LogEvent] = []
    globalLogPublisher.addObserver(events.append)
    try:
        puller = Clumsy(factory, BIND_ANY)
        pusher = ZmqPushConnection(factory, connect(puller.addresses[0]))
        for message in (b"bad", b"good"):
            pusher.push(message)
        run_until(reactor, lambda: puller.received == [[b"good"]])
    finally:
        globalLogPublisher.removeObserver(events.append)
    [event] = [e for e in events if "log_failure" in e]
    assert event["log_failure"].check(RuntimeError)


def test_pull_producer_is_asked_for_each_write(factory: ZmqFactory, reactor: Any) -> None:
    """A non-streaming producer registered on a push connection is resumed after each write."""
    puller = Collector(factory, BIND_ANY)
    pusher = ZmqPushConnection(factory, connect(puller.addresses[0]))

    class Counting:
        def __init__(self) -> None:
            self.sent = 0

        def resumeProducing(self) -> None:
            if self.sent < 20:
                self.sent += 1
                pusher.write(b"%d" % self.sent)

        def stopProducing(self) -> None:
            pass

    pusher.registerProducer(Counting(), streaming=False)
    run_until(reactor, lambda: len(puller.received) == 20)
    assert [m[0] for m in puller.received] == [b"%d" % n for n in range(1, 21)]


def test_empty_message_is_refused(factory: ZmqFactory) -> None:
    """A message needs at least one frame: push([]) raises ValueError, sends nothing."""
    pusher = ZmqPushConnection(factory, BIND_ANY)
    with pytest.raises(ValueError, match="at least one frame"):
        pusher.push([])


def test_bad_address_names_itself_and_leaves_nothing_open(factory: ZmqFactory) -> None:
    """A bind that fails raises ZMQError naming the address, and the socket is closed."""
    taken = Collector(factory, BIND_ANY)
    with pytest.raises(zmq.ZMQError, match=r"cannot bind 'tcp://127\.0\.0\.1:\d+'"):
        Collector(factory, ZmqEndpoint(ZmqEndpointType.bind, taken.addresses[0]))
    assert factory.connections == {taken}


def test_factory_shutdown_delivers_everything_pushed(reactor: Any, raw_socket: Any) -> None:
    """factory.shutdown() flushes, closes with linger and ends its context: nothing is lost."""

    class Small(ZmqPushConnection):
        highWaterMark = 10

    sink = raw_socket(zmq.PULL)
    sink.setsockopt(zmq.RCVTIMEO, 10_000)
    address = bind_raw(sink)
    factory = ZmqFactory(reactor=reactor)
    pusher = Small(factory, connect(address))
    for number in range(2000):
        pusher.push(b"%d" % number)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: [received.append(sink.recv()) for _ in range(2000)])
    reader.start()
    factory.shutdown()
    reader.join()
    assert factory.context.closed
    assert received == [b"%d" % n for n in range(2000)]
