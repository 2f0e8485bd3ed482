"""ROUTER/DEALER: addressed messages, unknown peers and lossless flow control, real sockets."""

from __future__ import annotations

import errno
from typing import Any

import pytest
import zmq

from stageflow.transport import ZmqDealerConnection, ZmqFactory, ZmqRouterConnection
from tests.transport.support import BIND_ANY, connect, run_until


class Router(ZmqRouterConnection):
    """Answers each message with ``ack`` plus its frames, to the sender."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.got: list[tuple[bytes, tuple[bytes, ...]]] = []
        super().__init__(*args, **kwargs)

    def gotMessage(self, senderId: bytes, *frames: bytes) -> None:
        self.got.append((senderId, frames))
        self.sendMultipart(senderId, [b"ack", *frames])


class Dealer(ZmqDealerConnection):
    """Keeps the frames of every message it gets."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.got: list[tuple[bytes, ...]] = []
        super().__init__(*args, **kwargs)

    def gotMessage(self, *frames: bytes) -> None:
        self.got.append(frames)


def test_dealers_are_answered_by_identity(factory: ZmqFactory, reactor: Any) -> None:
    """Two dealers' 500 messages each reach the router under their identity; each gets its acks."""
    router = Router(factory, BIND_ANY)
    dealers = {
        name: Dealer(factory, connect(router.addresses[0]), identity=name)
        for name in (b"left", b"right")
    }
    for number in range(500):
        for dealer in dealers.values():
            dealer.sendMsg(b"%d" % number)
    run_until(reactor, lambda: all(len(d.got) == 500 for d in dealers.values()))
    for name, dealer in dealers.items():
        assert dealer.got == [(b"ack", b"%d" % number) for number in range(500)]
        assert [frames for sender, frames in router.got if sender == name] == [
            (b"%d" % number,) for number in range(500)
        ]


def test_multipart_both_ways(factory: ZmqFactory, reactor: Any) -> None:
    """sendMultipart keeps a message's frames together in both directions."""
    router = Router(factory, BIND_ANY)
    dealer = Dealer(factory, connect(router.addresses[0]), identity=b"d")
    dealer.sendMultipart([b"a", b"b", b"c"])
    run_until(reactor, lambda: bool(dealer.got))
    assert router.got == [(b"d", (b"a", b"b", b"c"))]
    assert dealer.got == [(b"ack", b"a", b"b", b"c")]


def test_send_to_unknown_peer_raises_naming_it(factory: ZmqFactory) -> None:
    """A ROUTER message for a peer that is not connected raises instead of vanishing."""
    router = Router(factory, BIND_ANY)
    with pytest.raises(zmq.ZMQError, match="no connected peer b'nobody'") as raised:
        router.sendMsg(b"nobody", b"hello")
    assert raised.value.errno == errno.EHOSTUNREACH


def test_router_waits_for_a_full_peer_instead_of_dropping(
    factory: ZmqFactory, reactor: Any
) -> None:
    """2000 messages to a paused dealer (HWM 10) wait in the buffer; all arrive, in order."""

    class Small(Router):
        highWaterMark = 10

    class SmallDealer(Dealer):
        highWaterMark = 10

    router = Small(factory, BIND_ANY)
    dealer = SmallDealer(factory, connect(router.addresses[0]), identity=b"slow")
    dealer.sendMsg(b"hello")
    run_until(reactor, lambda: bool(dealer.got))
    dealer.pauseProducing()
    for number in range(2000):
        router.sendMsg(b"slow", b"%d" % number)
    assert router.buffered > 0
    dealer.resumeProducing()
    run_until(reactor, lambda: len(dealer.got) == 2001)
    assert dealer.got[1:] == [(b"%d" % number,) for number in range(2000)]
    assert router.buffered == 0
