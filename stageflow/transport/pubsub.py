"""PUB/SUB: ``publish(message, tag)`` to every subscriber whose subscription prefixes the tag.

On the wire a message is one frame, ``tag + b"\\0" + message``, as txZMQ sends it, so
stageflow and txZMQ publishers and subscribers mix. A two-frame message ``[tag, message]``
(what plain pyzmq publishers often send) is understood too.
"""

from __future__ import annotations

import zmq

from stageflow.transport.connection import ZmqConnection

_SEPARATOR = b"\0"


class ZmqPubConnection(ZmqConnection):
    """A PUB socket: ``publish()`` to every connected subscriber.

    ZeroMQ's PUB never blocks: a subscriber that falls ``highWaterMark`` messages behind
    misses what is published meanwhile, and with no subscriber a message goes nowhere.
    """

    socketType = zmq.PUB

    def publish(self, message: bytes, tag: bytes = b"") -> None:
        """Publish ``message`` under ``tag``; subscribers to any prefix of ``tag`` get it."""
        self.send(tag + _SEPARATOR + message)


class ZmqSubConnection(ZmqConnection):
    """A SUB socket: ``subscribe()`` to tag prefixes and override ``gotMessage``.

    A subscription travels to the publishers, which then filter; messages published
    before it arrives there are not received.
    """

    socketType = zmq.SUB

    def subscribe(self, tag: bytes) -> None:
        """Receive messages whose tag starts with ``tag`` (``b""`` for all). Repeatable."""
        self.socket.setsockopt(zmq.SUBSCRIBE, tag)
        # A subscription is a send on the socket, which may spend the FD's edge.
        self._recheck_events()

    def unsubscribe(self, tag: bytes) -> None:
        """Undo one earlier ``subscribe(tag)``."""
        self.socket.setsockopt(zmq.UNSUBSCRIBE, tag)
        self._recheck_events()

    def messageReceived(self, message: list[bytes]) -> None:
        """Unframe ``message`` into (message, tag) and hand it to ``gotMessage``."""
        if len(message) == 2:
            self.gotMessage(message[1], message[0])
            return
        if len(message) == 1 and _SEPARATOR in message[0]:
            tag, body = message[0].split(_SEPARATOR, 1)
            self.gotMessage(body, tag)
            return
        raise ValueError(
            f"{self.logPrefix()} got a message that is neither tag\\0message nor "
            f"[tag, message] ({len(message)} frames); publish with ZmqPubConnection.publish()"
        )

    def gotMessage(self, message: bytes, tag: bytes) -> None:
        """Called with each message received and its tag. Override it."""
        raise NotImplementedError(
            f"{type(self).__name__} received a message but does not override gotMessage"
        )
