"""ROUTER/DEALER: raw ZeroMQ routing, messages addressed to (and from) a peer's identity."""

from __future__ import annotations

from collections.abc import Sequence

import zmq

from stageflow.transport.connection import ZmqConnection


class ZmqDealerConnection(ZmqConnection):
    """A DEALER socket: messages go round-robin to the connected peers.

    Override ``gotMessage(*frames)``.
    """

    socketType = zmq.DEALER

    def sendMsg(self, message: bytes) -> None:
        """Send a single-frame message."""
        self.send([message])

    def sendMultipart(self, parts: Sequence[bytes]) -> None:
        """Send ``parts`` as one multipart message."""
        self.send(parts)

    def messageReceived(self, message: list[bytes]) -> None:
        """Hand the frames of ``message`` to ``gotMessage`` as arguments."""
        self.gotMessage(*message)

    def gotMessage(self, *frames: bytes) -> None:
        """Called with the frames of each message received. Override it."""
        raise NotImplementedError(
            f"{type(self).__name__} received a message but does not override gotMessage"
        )


class ZmqRouterConnection(ZmqConnection):
    """A ROUTER socket: every message names its peer by routing identity.

    Override ``gotMessage(senderId, *frames)``. Sending to a peer that is not connected
    raises ``zmq.ZMQError`` (EHOSTUNREACH) instead of dropping the message, and a peer
    at its high-water mark makes messages wait, as for every connection; see the README.
    """

    socketType = zmq.ROUTER

    def sendMsg(self, recipientId: bytes, message: bytes) -> None:
        """Send a single-frame message to the peer ``recipientId``."""
        self.send([recipientId, message])

    def sendMultipart(self, recipientId: bytes, parts: Sequence[bytes]) -> None:
        """Send ``parts`` as one multipart message to the peer ``recipientId``."""
        self.send([recipientId, *parts])

    def messageReceived(self, message: list[bytes]) -> None:
        """Split off the sender's identity and hand the rest to ``gotMessage``."""
        self.gotMessage(message[0], *message[1:])

    def gotMessage(self, senderId: bytes, *frames: bytes) -> None:
        """Called with the sender's identity and the frames of each message. Override it."""
        raise NotImplementedError(
            f"{type(self).__name__} received a message but does not override gotMessage"
        )
