"""Helpers shared by the transport tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.python.failure import Failure

from stageflow.transport import ZmqEndpoint, ZmqEndpointType


def run_until(reactor: Any, condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Turn ``reactor`` until ``condition()`` is true; fail the test after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        reactor.iterate(0.01)


BIND_ANY = ZmqEndpoint(ZmqEndpointType.bind, "tcp://127.0.0.1:*")
"""Bind to a free loopback port; read the port back from ``connection.addresses``."""


def connect(address: str) -> ZmqEndpoint:
    """The endpoint that connects to ``address``."""
    return ZmqEndpoint(ZmqEndpointType.connect, address)


def run_until_fired(reactor: Any, deferred: defer.Deferred[Any], timeout: float = 10.0) -> Any:
    """Turn ``reactor`` until ``deferred`` fires; return its result or raise its failure."""
    outcome: list[Any] = []
    deferred.addBoth(outcome.append)
    run_until(reactor, lambda: bool(outcome), timeout)
    if isinstance(outcome[0], Failure):
        outcome[0].raiseException()
    return outcome[0]
