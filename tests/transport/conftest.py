"""Fixtures for transport tests: a fresh reactor per test and a factory on it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import zmq
from twisted.internet.epollreactor import EPollReactor

from stageflow.transport import ZmqFactory, ZmqPushConnection


@pytest.fixture
def reactor() -> Iterator[EPollReactor]:
    """A private epoll reactor, driven with ``iterate``; the global one is never touched."""
    fresh = EPollReactor()
    yield fresh
    for call in fresh.getDelayedCalls():
        call.cancel()
    fresh.removeAll()
    if fresh.waker is not None:
        fresh.waker.connectionLost(None)
    fresh._poller.close()


@pytest.fixture
def context() -> Iterator[zmq.Context[Any]]:
    """A ZeroMQ context shared by the factory and raw test sockets, ended after the test."""
    ctx: zmq.Context[Any] = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)


@pytest.fixture
def factory(reactor: EPollReactor, context: zmq.Context[Any]) -> Iterator[ZmqFactory]:
    """A ZmqFactory on the private reactor; its connections are shut down afterwards."""
    made = ZmqFactory(reactor=reactor, context=context)
    yield made
    for connection in list(made.connections):
        # Tests end abruptly: nothing left in a buffer is worth waiting for.
        connection.linger = 0
        if isinstance(connection, ZmqPushConnection):
            connection.flushTimeout = 0
    made.shutdown()


@pytest.fixture
def raw_socket(context: zmq.Context[Any]) -> Iterator[Callable[[int], zmq.Socket[bytes]]]:
    """Make plain pyzmq sockets (linger 0) for the far side of a test; all closed after."""
    made: list[zmq.Socket[bytes]] = []

    def make(socket_type: int) -> zmq.Socket[bytes]:
        socket: zmq.Socket[bytes] = context.socket(socket_type)
        socket.setsockopt(zmq.LINGER, 0)
        made.append(socket)
        return socket

    yield make
    for socket in made:
        socket.close(linger=0)
