"""REQ/REP over DEALER/ROUTER: Deferred replies, timeouts, cancellation, on real sockets."""

from __future__ import annotations

from typing import Any

import pytest
import zmq
from twisted.internet import defer
from twisted.internet.error import ConnectionLost
from twisted.python.failure import Failure

from stageflow.transport import (
    ZmqFactory,
    ZmqREPConnection,
    ZmqREQConnection,
    ZmqRequestTimeoutError,
)
from tests.transport.support import BIND_ANY, connect, run_until, run_until_fired


class Holding(ZmqREPConnection):
    """Keeps requests unanswered until the test replies; routes bad ones to ``failed``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.requests: list[tuple[bytes, tuple[bytes, ...]]] = []
        self.failed: list[Failure] = []
        super().__init__(*args, **kwargs)

    def gotMessage(self, messageId: bytes, *messageParts: bytes) -> None:
        self.requests.append((messageId, messageParts))

    def on_message_error(self, message: list[bytes], failure: Failure) -> None:
        self.failed.append(failure)


class Echo(ZmqREPConnection):
    """Answers every request with its own parts, upper-cased."""

    def gotMessage(self, messageId: bytes, *messageParts: bytes) -> None:
        self.reply(messageId, *(part.upper() for part in messageParts))


def pair(factory: ZmqFactory, rep_class: type[ZmqREPConnection]) -> tuple[Any, ZmqREQConnection]:
    rep = rep_class(factory, BIND_ANY)
    return rep, ZmqREQConnection(factory, connect(rep.addresses[0]))


def timers_beyond(reactor: Any, seconds: float) -> list[Any]:
    """Pending reactor calls due more than ``seconds`` from now (request timeouts)."""
    return [c for c in reactor.getDelayedCalls() if c.getTime() > reactor.seconds() + seconds]


def test_concurrent_requests_each_get_their_reply(factory: ZmqFactory, reactor: Any) -> None:
    """200 outstanding requests answered in reverse order each fire with their own reply."""
    rep, req = pair(factory, Holding)
    deferreds = [req.sendMsg(b"%d" % number, b"x") for number in range(200)]
    run_until(reactor, lambda: len(rep.requests) == 200)
    for messageId, parts in reversed(rep.requests):
        rep.reply(messageId, b"re:" + parts[0], parts[1])
    replies = run_until_fired(reactor, defer.gatherResults(deferreds))
    assert replies == [[b"re:%d" % number, b"x"] for number in range(200)]
    assert req._requests == {}


def test_reply_over_tcp_round_trip(factory: ZmqFactory, reactor: Any) -> None:
    """sendMsg's Deferred fires with the replier's frames."""
    _, req = pair(factory, Echo)
    assert run_until_fired(reactor, req.sendMsg(b"ab", b"cd")) == [b"AB", b"CD"]


def test_timeout_fails_and_late_reply_is_dropped(factory: ZmqFactory, reactor: Any) -> None:
    """timeout= fails the request with ZmqRequestTimeoutError; its late reply changes nothing."""
    rep, req = pair(factory, Holding)
    late = req.sendMsg(b"slow", timeout=0.05)
    with pytest.raises(ZmqRequestTimeoutError):
        run_until_fired(reactor, late)
    run_until(reactor, lambda: len(rep.requests) == 1)
    messageId = rep.requests[0][0]
    rep.reply(messageId, b"too late")
    # The next request's reply proves the late one was read (same pipe, in order).
    follow = req.sendMsg(b"next")
    run_until(reactor, lambda: len(rep.requests) == 2)
    rep.reply(rep.requests[1][0], b"on time")
    assert run_until_fired(reactor, follow) == [b"on time"]
    assert messageId in req._uuids and req._requests == {}


def test_default_request_timeout_applies(factory: ZmqFactory, reactor: Any) -> None:
    """defaultRequestTimeout bounds a request that names no timeout."""

    class Impatient(ZmqREQConnection):
        defaultRequestTimeout = 0.05

    rep = Holding(factory, BIND_ANY)
    req = Impatient(factory, connect(rep.addresses[0]))
    with pytest.raises(ZmqRequestTimeoutError):
        run_until_fired(reactor, req.sendMsg(b"unanswered"))


def test_cancel_fails_with_cancelled_error(factory: ZmqFactory, reactor: Any) -> None:
    """Cancelling a request's Deferred forgets it and cancels its timeout."""
    _, req = pair(factory, Holding)
    pending = req.sendMsg(b"never mind", timeout=30)
    pending.cancel()
    with pytest.raises(defer.CancelledError):
        run_until_fired(reactor, pending)
    assert req._requests == {}
    assert not timers_beyond(reactor, 20)


def test_shutdown_fails_requests_with_a_timeout(factory: ZmqFactory, reactor: Any) -> None:
    """At shutdown a request with a timeout fails with ConnectionLost; one without stays unfired."""
    _, req = pair(factory, Holding)
    outcome: list[Any] = []
    req.sendMsg(b"awaited", timeout=30).addBoth(outcome.append)
    unobserved = req.sendMsg(b"no timeout")
    req.shutdown()
    assert len(outcome) == 1 and outcome[0].check(ConnectionLost)
    assert not unobserved.called  # no failure to be logged as unhandled
    assert not timers_beyond(reactor, 20)


def test_reply_to_unknown_request_names_it(factory: ZmqFactory) -> None:
    """reply() for an id never received raises KeyError naming the id."""
    rep = Echo(factory, BIND_ANY)
    with pytest.raises(KeyError, match="no request b'nope'"):
        rep.reply(b"nope", b"x")


def test_malformed_request_is_routed_and_serving_goes_on(
    factory: ZmqFactory, reactor: Any, raw_socket: Any
) -> None:
    """A request without the empty delimiter frame is routed as an error; the next is served."""
    rep = Holding(factory, BIND_ANY)
    dealer = raw_socket(zmq.DEALER)
    dealer.connect(rep.addresses[0])
    dealer.send_multipart([b"garbage"])
    dealer.send_multipart([b"id-1", b"", b"fine"])
    run_until(reactor, lambda: len(rep.requests) == 1)
    assert rep.requests == [(b"id-1", (b"fine",))]
    assert len(rep.failed) == 1 and rep.failed[0].check(ValueError)
