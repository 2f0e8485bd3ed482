"""REQ/REP the way txZMQ does it: over DEALER and ROUTER, with a message id per request.

A request travels as ``[messageId, b"", *parts]``; the replier answers with the same id,
so many requests can be outstanding at once (a plain REQ socket allows one) and each
reply fires the Deferred its request returned. Ids are 16 random bytes (UUID4), drawn
from a small pool and reused once their reply has arrived.
"""

from __future__ import annotations

import uuid
from typing import Any

import zmq
from twisted.internet import defer
from twisted.internet.error import ConnectionLost

from stageflow.transport.connection import ZmqConnection

_DELIMITER = b""


class ZmqRequestTimeoutError(Exception):
    """A request got no reply within its timeout; the argument is its message id."""


class ZmqREQConnection(ZmqConnection):
    """The requesting side: ``sendMsg(*parts)`` returns a Deferred firing with the reply.

    The reply is the list of its frames. A request is given up with
    ZmqRequestTimeoutError after ``timeout`` seconds (or ``defaultRequestTimeout``),
    with CancelledError when its Deferred is cancelled, and, if it has a timeout, with
    ConnectionLost when the connection shuts down first; a reply arriving later is dropped.
    """

    socketType = zmq.DEALER

    defaultRequestTimeout: float | None = None
    """Seconds a request waits for its reply when ``sendMsg`` names no timeout; None waits
    for ever."""

    UUID_POOL_GEN_SIZE = 5
    """Ids made at once when the pool of free ids is empty (txZMQ's name)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # messageId -> (the request's Deferred, its timeout call or None)
        self._requests: dict[bytes, tuple[defer.Deferred[list[bytes]], Any]] = {}
        self._uuids: list[bytes] = []
        # Ids given up on (timed out, cancelled): free again once their late reply comes.
        self._abandoned: set[bytes] = set()
        super().__init__(*args, **kwargs)

    def sendMsg(self, *messageParts: bytes, timeout: float | None = None) -> defer.Deferred[Any]:
        """Send a request of ``messageParts``; the Deferred fires with the reply's frames."""
        messageId = self._getNextId()
        d: defer.Deferred[Any] = defer.Deferred(canceller=lambda _: self._cancel(messageId))
        if timeout is None:
            timeout = self.defaultRequestTimeout
        timer = None
        if timeout is not None:
            timer = self.reactor.callLater(timeout, self._timeoutRequest, messageId)
        self._requests[messageId] = (d, timer)
        try:
            self.send([messageId, _DELIMITER, *messageParts])
        except BaseException:
            self._requests.pop(messageId)
            if timer is not None:
                timer.cancel()
            raise
        return d

    def _getNextId(self) -> bytes:
        """A message id no outstanding request uses (override for custom ids)."""
        if not self._uuids:
            self._uuids.extend(uuid.uuid4().bytes for _ in range(self.UUID_POOL_GEN_SIZE))
        return self._uuids.pop()

    def _releaseId(self, msgId: bytes) -> None:
        """Return ``msgId`` to the pool, which is kept to at most twice its batch size."""
        self._uuids.append(msgId)
        if len(self._uuids) > 2 * self.UUID_POOL_GEN_SIZE:
            del self._uuids[-self.UUID_POOL_GEN_SIZE :]

    def _cancel(self, msgId: bytes) -> None:
        """The request's Deferred was cancelled: forget it; a late reply is dropped."""
        _, timer = self._requests.pop(msgId, (None, None))
        if timer is not None and timer.active():
            timer.cancel()
        self._abandoned.add(msgId)

    def _timeoutRequest(self, msgId: bytes) -> None:
        request = self._requests.pop(msgId, None)
        if request is not None:
            self._abandoned.add(msgId)
            request[0].errback(ZmqRequestTimeoutError(msgId))

    def messageReceived(self, message: list[bytes]) -> None:
        """Fire the Deferred of the request this reply answers."""
        if len(message) < 2 or message[1] != _DELIMITER:
            raise ValueError(
                f"{self.logPrefix()} got a reply that is not [messageId, b'', *parts] "
                "(the replier must answer with ZmqREPConnection.reply())"
            )
        msgId = message[0]
        request = self._requests.pop(msgId, None)
        if request is None:
            if msgId in self._abandoned:
                self._abandoned.discard(msgId)
                self._releaseId(msgId)
                return
            raise ValueError(f"{self.logPrefix()} got a reply to unknown request {msgId!r}")
        self._releaseId(msgId)
        d, timer = request
        if timer is not None and timer.active():
            timer.cancel()
        d.callback(message[2:])

    def _before_close(self) -> None:
        requests, self._requests = self._requests, {}
        for d, timer in requests.values():
            # A request with a timeout was going to fail if no reply came: it fails now,
            # with the real reason. One without stays unfired, as in txZMQ, so that a
            # Deferred its caller dropped is not logged as an unhandled error.
            if timer is not None and timer.active():
                timer.cancel()
                d.errback(ConnectionLost(f"{self.logPrefix()} shut down before the reply came"))


class ZmqREPConnection(ZmqConnection):
    """The replying side: override ``gotMessage(messageId, *parts)``, answer with ``reply``.

    The reply may come at any later time; requests are remembered until answered.
    """

    socketType = zmq.ROUTER

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # messageId -> the routing frames that lead back to the requester
        self._routingInfo: dict[bytes, list[bytes]] = {}
        super().__init__(*args, **kwargs)

    def reply(self, messageId: bytes, *messageParts: bytes) -> None:
        """Answer the request ``messageId`` with ``messageParts``."""
        try:
            routing = self._routingInfo.pop(messageId)
        except KeyError:
            raise KeyError(
                f"{self.logPrefix()} has no request {messageId!r} to reply to "
                "(answered already, or never received)"
            ) from None
        self.send([*routing, messageId, _DELIMITER, *messageParts])

    def messageReceived(self, message: list[bytes]) -> None:
        """Remember where the request came from and hand it to ``gotMessage``."""
        try:
            delimiter = message.index(_DELIMITER, 2)
        except ValueError:
            raise ValueError(
                f"{self.logPrefix()} got a request that is not [messageId, b'', *parts] "
                "(send requests with ZmqREQConnection.sendMsg())"
            ) from None
        messageId = message[delimiter - 1]
        self._routingInfo[messageId] = message[: delimiter - 1]
        self.gotMessage(messageId, *message[delimiter + 1 :])

    def gotMessage(self, messageId: bytes, *messageParts: bytes) -> None:
        """Called with each request; answer it with ``reply(messageId, ...)``. Override it."""
        raise NotImplementedError(
            f"{type(self).__name__} received a request but does not override gotMessage"
        )
