"""PUB/SUB: tags, prefix subscriptions, fan-out and framing, on real sockets."""

from __future__ import annotations

from typing import Any

import zmq
from twisted.python.failure import Failure

from stageflow.transport import ZmqFactory, ZmqPubConnection, ZmqSubConnection
from tests.transport.support import BIND_ANY, connect, run_until


class Subscriber(ZmqSubConnection):
    """Keeps every (tag, message) it gets, and every message it could not unframe."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.got: list[tuple[bytes, bytes]] = []
        self.failed: list[tuple[list[bytes], Failure]] = []
        super().__init__(*args, **kwargs)

    def gotMessage(self, message: bytes, tag: bytes) -> None:
        self.got.append((tag, message))

    def on_message_error(self, message: list[bytes], failure: Failure) -> None:
        self.failed.append((message, failure))

    def real(self) -> list[tuple[bytes, bytes]]:
        """What arrived apart from the probes used to wait for subscriptions."""
        return [(tag, message) for tag, message in self.got if message != b"probe"]


def wait_subscribed(
    reactor: Any, pub: ZmqPubConnection, subs: list[Subscriber], tag: bytes
) -> None:
    """Publish probes under ``tag`` until every subscriber got one: the subscription is live."""

    def arrived() -> bool:
        pub.publish(b"probe", tag)
        return all(any(t == tag for t, _ in sub.got) for sub in subs)

    run_until(reactor, arrived)


def test_prefix_subscription_filters_tags(factory: ZmqFactory, reactor: Any) -> None:
    """A subscriber gets exactly the messages whose tag starts with its subscription."""
    pub = ZmqPubConnection(factory, BIND_ANY)
    sub = Subscriber(factory, connect(pub.addresses[0]))
    sub.subscribe(b"tag")
    wait_subscribed(reactor, pub, [sub], b"tag-probe")
    pub.publish(b"xyz", b"different-tag")
    pub.publish(b"abcd", b"tag1")
    pub.publish(b"efgh", b"tag2")
    pub.publish(b"end", b"tag-end")
    run_until(reactor, lambda: (b"tag-end", b"end") in sub.got)
    assert sub.real() == [(b"tag1", b"abcd"), (b"tag2", b"efgh"), (b"tag-end", b"end")]


def test_unsubscribe_stops_that_tag_only(factory: ZmqFactory, reactor: Any) -> None:
    """After unsubscribe(a), messages tagged a stop while other subscriptions go on."""
    pub = ZmqPubConnection(factory, BIND_ANY)
    sub = Subscriber(factory, connect(pub.addresses[0]))
    sub.subscribe(b"a")
    sub.subscribe(b"z")
    wait_subscribed(reactor, pub, [sub], b"a")
    sub.unsubscribe(b"a")
    # Subscription changes reach the publisher in order: once "y" is live, "a" is gone.
    sub.subscribe(b"y")
    wait_subscribed(reactor, pub, [sub], b"y")
    pub.publish(b"dropped", b"a")
    pub.publish(b"kept", b"z")
    run_until(reactor, lambda: (b"z", b"kept") in sub.got)
    assert sub.real() == [(b"z", b"kept")]


def test_fan_out_every_subscriber_gets_every_message(factory: ZmqFactory, reactor: Any) -> None:
    """1000 messages published reach each of three subscribers once each, in order."""
    pub = ZmqPubConnection(factory, BIND_ANY)
    subs = [Subscriber(factory, connect(pub.addresses[0])) for _ in range(3)]
    for sub in subs:
        sub.subscribe(b"")
    wait_subscribed(reactor, pub, subs, b"")
    expected = [(b"n", b"%d" % number) for number in range(1000)]
    for _, message in expected:
        pub.publish(message, b"n")
    run_until(reactor, lambda: all(len(sub.real()) == len(expected) for sub in subs))
    assert all(sub.real() == expected for sub in subs)


def test_two_frame_and_malformed_messages(
    factory: ZmqFactory, reactor: Any, raw_socket: Any
) -> None:
    """[tag, message] from a plain publisher is understood; an untagged frame is routed."""
    pub = raw_socket(zmq.PUB)
    pub.bind("tcp://127.0.0.1:*")
    sub = Subscriber(factory, connect(pub.getsockopt_string(zmq.LAST_ENDPOINT)))
    sub.subscribe(b"")

    def subscribed() -> bool:
        pub.send_multipart([b"t", b"probe"])
        return bool(sub.got)

    run_until(reactor, subscribed)
    pub.send(b"no separator")
    pub.send_multipart([b"t", b"body"])
    run_until(reactor, lambda: (b"t", b"body") in sub.got)
    assert [message for message, _ in sub.failed] == [[b"no separator"]]
    assert sub.failed[0][1].check(ValueError)
