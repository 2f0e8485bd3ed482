"""ZmqConnection: one ZeroMQ socket watched by the Twisted reactor.

ZeroMQ signals readiness through ``ZMQ_FD``, which is edge-triggered: it becomes readable
when the socket's state *may* have changed, and any libzmq call on the socket (a send, a
receive, reading ``ZMQ_EVENTS``) can consume that edge. A message is stranded if we
consume the edge and then wait for the FD again. So every handler here ends by asking
``ZMQ_EVENTS`` what the socket can do now, and work that remains is scheduled with
``reactor.callLater(0, ...)`` instead of trusting the FD to fire again.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, cast

import zmq
from twisted.internet.interfaces import IFileDescriptor, IReadDescriptor
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer  # type: ignore[import-untyped]

from stageflow.transport.endpoint import ZmqEndpoint, ZmqEndpointType
from stageflow.transport.factory import ZmqFactory

_SOCKET_NAMES: dict[int, str] = {zmq.PUSH: "PUSH", zmq.PULL: "PULL"}


@implementer(IReadDescriptor, IFileDescriptor)
class ZmqConnection:
    """A ZeroMQ socket of ``socketType`` on the factory's reactor.

    Subclasses set ``socketType``. Socket options are class attributes, applied when the
    socket is made, so a subclass changes them in one place (``linger`` is also read when
    the socket closes, so setting it on an instance changes how that one closes).
    """

    socketType: ClassVar[int]

    highWaterMark: int = 10_000
    """ZMQ_SNDHWM and ZMQ_RCVHWM, in messages. ZeroMQ's default is 1000; txZMQ's was
    unlimited (0), which turns a slow consumer into unbounded memory growth."""

    linger: int = 2_000
    """ZMQ_LINGER in milliseconds: how long a closed socket keeps trying to deliver what
    ZeroMQ still holds. Bounded so that ``shutdown()`` and context termination never hang."""

    maxMessageSize: int = 64 * 1024 * 1024
    """ZMQ_MAXMSGSIZE in bytes: a peer sending a larger frame is disconnected instead of
    exhausting memory. -1 lifts the limit."""

    identity: bytes | None = None
    """ZMQ_ROUTING_ID, if set (txZMQ's ``identity``)."""

    _log: ClassVar[Logger] = Logger()

    def __init__(
        self,
        factory: ZmqFactory,
        endpoint: ZmqEndpoint | Sequence[ZmqEndpoint] | None = None,
    ) -> None:
        self.factory = factory
        self.reactor: Any = factory.reactor
        self.socket: zmq.Socket[bytes] = factory.context.socket(self.socketType)
        self._configure_socket()
        self._fd: int = self.socket.getsockopt(zmq.FD)
        self._closed = False
        # (requested endpoint, resolved address) for every bind and connect done.
        self._endpoints: list[tuple[ZmqEndpoint, str]] = []
        factory.connections.add(self)
        self.reactor.addReader(self)
        try:
            if isinstance(endpoint, ZmqEndpoint):
                self.addEndpoints([endpoint])
            elif endpoint is not None:
                self.addEndpoints(endpoint)
        except BaseException:
            # A half-made connection must not leave its socket and reader behind.
            self.shutdown()
            raise

    # -- endpoints -------------------------------------------------------------------

    @property
    def endpoints(self) -> list[ZmqEndpoint]:
        """The endpoints as requested, in the order they were added."""
        return [requested for requested, _ in self._endpoints]

    @property
    def addresses(self) -> list[str]:
        """The resolved addresses: ``tcp://127.0.0.1:*`` reads back as the port chosen."""
        return [resolved for _, resolved in self._endpoints]

    def addEndpoints(self, endpoints: Sequence[ZmqEndpoint]) -> None:
        """Bind or connect each endpoint now (txZMQ's name)."""
        try:
            for endpoint in endpoints:
                self._add_endpoint(ZmqEndpoint(ZmqEndpointType(endpoint.type), endpoint.address))
        finally:
            self._recheck_events()

    def _add_endpoint(self, endpoint: ZmqEndpoint) -> None:
        try:
            if endpoint.type is ZmqEndpointType.bind:
                self.socket.bind(endpoint.address)
                resolved = self.socket.getsockopt_string(zmq.LAST_ENDPOINT)
            else:
                self.socket.connect(endpoint.address)
                resolved = endpoint.address
        except zmq.ZMQError as exc:
            # Same exception type for callers that catch it, with a sentence naming the
            # connection, the operation and the address.
            raise zmq.ZMQError(
                exc.errno,
                f"{self.logPrefix()} cannot {endpoint.type.value} {endpoint.address!r}: "
                f"{exc.strerror}",
            ) from exc
        self._endpoints.append((endpoint, resolved))

    def remove_endpoint(self, endpoint: ZmqEndpoint | str) -> None:
        """Unbind or disconnect one endpoint, named by the endpoint or by an address.

        An address matches either the requested address or the resolved one, so a
        wildcard bind can be undone with what ``addresses`` reported.
        """
        matches = [
            entry
            for entry in self._endpoints
            if endpoint == entry[0] or endpoint in (entry[0].address, entry[1])
        ]
        if not matches:
            raise ValueError(f"{self.logPrefix()} has no endpoint {endpoint!r}; see .addresses")
        requested, resolved = matches[0]
        self._endpoints.remove(matches[0])
        if requested.type is ZmqEndpointType.bind:
            self.socket.unbind(resolved)
        else:
            self.socket.disconnect(resolved)
        self._recheck_events()

    # -- lifecycle -------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """True once ``shutdown()`` has closed the socket."""
        return self._closed

    def shutdown(self) -> None:
        """Stop watching the socket and close it with a bounded linger. Idempotent."""
        if self._closed:
            return
        self._before_close()
        self._closed = True
        self.reactor.removeReader(self)
        self._cancel_scheduled()
        self.socket.close(linger=self.linger)
        self.factory.connections.discard(self)

    # -- Twisted's IReadDescriptor -----------------------------------------------------

    def fileno(self) -> int:
        """The ZMQ_FD the reactor watches; -1 once closed."""
        return -1 if self._closed else self._fd

    def doRead(self) -> None:
        """The FD fired: read ZMQ_EVENTS (which re-arms the FD) and act on it."""
        if self._closed:
            return
        self._handle_events(cast(int, self.socket.getsockopt(zmq.EVENTS)))

    def connectionLost(self, reason: Failure) -> None:
        """The reactor dropped us (reactor shutdown, or doRead raised): close cleanly."""
        if not self._closed:
            self._log.info("{prefix} closing: {reason}", prefix=self.logPrefix(), reason=reason)
            self.shutdown()

    def logPrefix(self) -> str:
        """How log lines name this connection."""
        return f"{type(self).__name__}({_SOCKET_NAMES.get(self.socketType, self.socketType)})"

    # -- steps subclasses fill in ------------------------------------------------------

    def _handle_events(self, events: int) -> None:
        """React to ZMQ_EVENTS flags; the push and pull sides each handle their half."""

    def _recheck_events(self) -> None:
        """Look at ZMQ_EVENTS after a libzmq call that may have spent the FD's edge.

        A connect, for one, attaches a pipe without any FD signal, so a push buffer that
        waited for a peer would otherwise wait forever.
        """

    def _before_close(self) -> None:
        """Last chance to hand buffered messages to ZeroMQ before the socket closes."""

    def _cancel_scheduled(self) -> None:
        """Cancel any callLater this connection still has pending."""

    def _configure_socket(self) -> None:
        socket = self.socket
        socket.setsockopt(zmq.SNDHWM, self.highWaterMark)
        socket.setsockopt(zmq.RCVHWM, self.highWaterMark)
        socket.setsockopt(zmq.LINGER, self.linger)
        socket.setsockopt(zmq.MAXMSGSIZE, self.maxMessageSize)
        if self.identity is not None:
            socket.setsockopt(zmq.ROUTING_ID, self.identity)

    def __repr__(self) -> str:
        return f"<{self.logPrefix()} {self.addresses}>"
