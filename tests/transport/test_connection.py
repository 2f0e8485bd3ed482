"""The base ZmqConnection and ZmqFactory as txZMQ documents them, on real sockets."""

from __future__ import annotations

from typing import Any

import pytest
import zmq
from twisted.python.failure import Failure

from stageflow.transport import (
    ZmqConnection,
    ZmqDealerConnection,
    ZmqEndpoint,
    ZmqEndpointType,
    ZmqFactory,
    ZmqPushConnection,
)
from tests.transport.support import BIND_ANY, connect, run_until


class Sender(ZmqConnection):
    """A bare PUSH connection, as txZMQ users subclass the base class."""

    socketType = zmq.PUSH


class Receiver(ZmqConnection):
    """A bare PULL connection that keeps what messageReceived gets."""

    socketType = zmq.PULL

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.messages: list[list[bytes]] = []
        super().__init__(*args, **kwargs)

    def messageReceived(self, message: list[bytes]) -> None:
        self.messages.append(message)


def test_base_send_reaches_message_received(factory: ZmqFactory, reactor: Any) -> None:
    """send() of bytes and of frame lists on the base class arrives whole in messageReceived."""
    receiver = Receiver(factory, BIND_ANY)
    sender = Sender(factory, connect(receiver.addresses[0]))
    sender.send(b"one")
    sender.send([b"two", b"frames"])
    sender.send((b"a", b"tuple"))
    run_until(reactor, lambda: len(receiver.messages) == 3)
    assert receiver.messages == [[b"one"], [b"two", b"frames"], [b"a", b"tuple"]]


def test_unhandled_message_is_routed_not_fatal(factory: ZmqFactory, reactor: Any) -> None:
    """A connection without messageReceived routes NotImplementedError and keeps reading."""
    failures: list[tuple[list[bytes], Failure]] = []

    class Bare(ZmqConnection):
        socketType = zmq.PULL

        def on_message_error(self, message: list[bytes], failure: Failure) -> None:
            failures.append((message, failure))

    bare = Bare(factory, BIND_ANY)
    sender = Sender(factory, connect(bare.addresses[0]))
    sender.send(b"first")
    sender.send(b"second")
    run_until(reactor, lambda: len(failures) == 2)
    assert [m for m, _ in failures] == [[b"first"], [b"second"]]
    assert all(f.check(NotImplementedError) for _, f in failures)


def test_identity_argument_names_the_peer(
    factory: ZmqFactory, reactor: Any, raw_socket: Any
) -> None:
    """identity= sets ZMQ_ROUTING_ID, which a ROUTER sees as the sender."""
    router = raw_socket(zmq.ROUTER)
    router.bind("tcp://127.0.0.1:*")
    dealer = ZmqDealerConnection(
        factory, connect(router.getsockopt_string(zmq.LAST_ENDPOINT)), identity=b"me"
    )
    assert dealer.socket.getsockopt(zmq.ROUTING_ID) == b"me"
    dealer.sendMsg(b"hello")
    assert router.poll(10_000)
    assert router.recv_multipart() == [b"me", b"hello"]


def test_every_socket_option_attribute_is_applied(factory: ZmqFactory) -> None:
    """The txZMQ socket-option class attributes reach the socket, each one."""

    class Tuned(Sender):
        highWaterMark = 123
        multicastRate = 500
        allowLoopbackMulticast = True
        tcpKeepalive = 1
        tcpKeepaliveCount = 4
        tcpKeepaliveIdle = 30
        tcpKeepaliveInterval = 5
        reconnectInterval = 250
        reconnectIntervalMax = 4000
        maxMessageSize = 4096
        linger = 7

    socket = Tuned(factory).socket
    assert {
        option: socket.getsockopt(option)
        for option in (
            zmq.SNDHWM,
            zmq.RCVHWM,
            zmq.RATE,
            zmq.MULTICAST_LOOP,
            zmq.TCP_KEEPALIVE,
            zmq.TCP_KEEPALIVE_CNT,
            zmq.TCP_KEEPALIVE_IDLE,
            zmq.TCP_KEEPALIVE_INTVL,
            zmq.RECONNECT_IVL,
            zmq.RECONNECT_IVL_MAX,
            zmq.MAXMSGSIZE,
            zmq.LINGER,
        )
    } == {
        zmq.SNDHWM: 123,
        zmq.RCVHWM: 123,
        zmq.RATE: 500,
        zmq.MULTICAST_LOOP: 1,
        zmq.TCP_KEEPALIVE: 1,
        zmq.TCP_KEEPALIVE_CNT: 4,
        zmq.TCP_KEEPALIVE_IDLE: 30,
        zmq.TCP_KEEPALIVE_INTVL: 5,
        zmq.RECONNECT_IVL: 250,
        zmq.RECONNECT_IVL_MAX: 4000,
        zmq.MAXMSGSIZE: 4096,
        zmq.LINGER: 7,
    }


def test_keepalive_zero_leaves_os_defaults(factory: ZmqFactory) -> None:
    """tcpKeepalive = 0 (the default) leaves ZeroMQ's keepalive options untouched."""
    socket = Sender(factory).socket
    assert socket.getsockopt(zmq.TCP_KEEPALIVE) == -1
    assert socket.getsockopt(zmq.TCP_KEEPALIVE_CNT) == -1


def test_linger_comes_from_factory_unless_the_connection_sets_it(
    reactor: Any, context: Any
) -> None:
    """ZmqFactory.lingerPeriod is every socket's ZMQ_LINGER unless the class sets linger."""

    class Quick(ZmqFactory):
        lingerPeriod = 42

    class Own(Sender):
        linger = 9

    factory = Quick(reactor=reactor, context=context)
    try:
        assert Sender(factory).socket.getsockopt(zmq.LINGER) == 42
        assert Own(factory).socket.getsockopt(zmq.LINGER) == 9
    finally:
        factory.shutdown()


def test_fd_and_repr_in_txzmq_form(factory: ZmqFactory) -> None:
    """fd is the socket's ZMQ_FD and repr() reads as txZMQ's does."""
    receiver = Receiver(factory, ZmqEndpoint(ZmqEndpointType.bind, "inproc://repr-check"))
    assert receiver.fd == receiver.socket.getsockopt(zmq.FD) == receiver.fileno()
    assert repr(receiver) == (
        "Receiver(ZmqFactory(), [ZmqEndpoint(type='bind', address='inproc://repr-check')])"
    )


def test_factory_reactor_from_class_or_instance(
    reactor: Any, context: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ZmqFactory.reactor set on the class, or on an instance, is the connections' reactor."""
    monkeypatch.setattr(ZmqFactory, "reactor", reactor)
    by_class = ZmqFactory(context=context)
    assert Sender(by_class).reactor is reactor
    monkeypatch.undo()
    by_instance = ZmqFactory(context=context)
    by_instance.reactor = reactor
    try:
        assert Sender(by_instance).reactor is reactor
    finally:
        by_class.shutdown()
        by_instance.shutdown()


def test_register_for_shutdown_closes_on_reactor_stop(reactor: Any) -> None:
    """registerForShutdown() shuts the factory and its connections down when the reactor stops."""
    factory = ZmqFactory(reactor=reactor)
    receiver = Receiver(factory, BIND_ANY)
    pusher = ZmqPushConnection(factory, connect(receiver.addresses[0]))
    factory.registerForShutdown()
    reactor.callWhenRunning(reactor.stop)
    reactor.run(installSignalHandlers=False)
    assert pusher.closed and receiver.closed and factory.context.closed
    assert factory.connections == set()
    factory.shutdown()  # idempotent, also after the trigger fired


def test_shutdown_removes_the_trigger(reactor: Any) -> None:
    """A factory shut down by hand no longer runs at reactor shutdown."""
    factory = ZmqFactory(reactor=reactor)
    factory.registerForShutdown()
    factory.shutdown()
    assert reactor._eventTriggers["shutdown"].before == []
