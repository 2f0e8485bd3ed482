"""ZmqConnection: one ZeroMQ socket of any type, watched by the Twisted reactor.

Every connection reads and sends. Reading happens in bounded slices that hand each whole
message to ``messageReceived`` (sockets that cannot receive, PUSH and PUB, never read);
``send()`` hands a message to ZeroMQ, or to a bounded outgoing buffer while ZeroMQ is at
its high-water mark, so it never raises EAGAIN and never drops (see ``send``).

ZeroMQ signals readiness through ``ZMQ_FD``, which is edge-triggered: it becomes readable
when the socket's state *may* have changed, and any libzmq call on the socket (a send, a
receive, reading ``ZMQ_EVENTS``) can consume that edge. A message is stranded if we
consume the edge and then wait for the FD again. So every handler here ends by asking
``ZMQ_EVENTS`` what the socket can do now, and work that remains is scheduled with
``reactor.callLater(0, ...)`` instead of trusting the FD to fire again.

Flow control: a connection is an IPushProducer (paused, it stops reading and leaves the
backlog to ZeroMQ's queues, which the high-water mark bounds) and an IConsumer (a
registered producer is paused as soon as a message has to wait in the outgoing buffer and
resumed when it is empty again), so a read→send stage stops reading while its downstream
is full.
"""

from __future__ import annotations

import errno
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, cast

import zmq
from twisted.internet import defer
from twisted.internet.error import ConnectionLost
from twisted.internet.interfaces import (
    IConsumer,
    IFileDescriptor,
    IProducer,
    IPushProducer,
    IReadDescriptor,
)
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer  # type: ignore[import-untyped]

from stageflow.transport.compiled import read_batch as compiled_read_batch
from stageflow.transport.endpoint import ZmqEndpoint, ZmqEndpointType
from stageflow.transport.factory import ZmqFactory

Message = bytes | bytearray | memoryview | Sequence[bytes]
"""What send() takes: one frame, or a sequence of frames sent as one message."""

_NOBLOCK = zmq.NOBLOCK
_SNDMORE = zmq.SNDMORE
_POLLIN = zmq.POLLIN
_POLLOUT = zmq.POLLOUT
_EVENTS = zmq.EVENTS
_Again = zmq.Again
_SINGLE_FRAME = (bytes, bytearray, memoryview, zmq.Frame)
_SEND_ONLY = frozenset({zmq.PUSH, zmq.PUB})

_BLOCKED_PEER_RETRY = 0.001
"""Seconds before retrying a send that failed although ZeroMQ reported room: a ROUTER
says it can send when *any* peer can, so the peer the oldest message is for may be full."""


def _truncated_repr(message: list[bytes], limit: int = 200) -> str:
    text = repr(message)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} chars)"


@implementer(IReadDescriptor, IFileDescriptor, IPushProducer, IConsumer)
class ZmqConnection:
    """A ZeroMQ socket of ``socketType`` on the factory's reactor (txZMQ's base class).

    Subclasses set ``socketType`` and override ``messageReceived``. Socket options are
    class attributes, applied when the socket is made, so a subclass changes them in one
    place (``linger`` is also read when the socket closes, so setting it on an instance
    changes how that one closes).
    """

    socketType: ClassVar[int]

    highWaterMark: int = 10_000
    """ZMQ_SNDHWM and ZMQ_RCVHWM, in messages. ZeroMQ's default is 1000; txZMQ's was
    unlimited (0), which turns a slow consumer into unbounded memory growth."""

    linger: int | None = None
    """ZMQ_LINGER in milliseconds, or None for the factory's ``lingerPeriod``: how long a
    closed socket keeps trying to deliver what ZeroMQ still holds."""

    maxMessageSize: int = 64 * 1024 * 1024
    """ZMQ_MAXMSGSIZE in bytes: a peer sending a larger frame is disconnected instead of
    exhausting memory. -1 lifts the limit."""

    identity: bytes | None = None
    """ZMQ_ROUTING_ID, if set; the constructor's ``identity`` argument overrides it."""

    multicastRate: int = 100
    """ZMQ_RATE, the multicast data rate in kilobits per second (pgm://, epgm://)."""

    allowLoopbackMulticast: bool = False
    """ZMQ_MULTICAST_LOOP: whether multicast sent from this host is received here too."""

    tcpKeepalive: int = 0
    """ZMQ_TCP_KEEPALIVE: 1 turns TCP keepalive on, -1 off; 0 leaves the OS default and
    the three options below untouched (as txZMQ did)."""

    tcpKeepaliveCount: int = 0
    """ZMQ_TCP_KEEPALIVE_CNT when keepalive is set and this is positive."""

    tcpKeepaliveIdle: int = 0
    """ZMQ_TCP_KEEPALIVE_IDLE (seconds) when keepalive is set and this is positive."""

    tcpKeepaliveInterval: int = 0
    """ZMQ_TCP_KEEPALIVE_INTVL (seconds) when keepalive is set and this is positive."""

    reconnectInterval: int = 100
    """ZMQ_RECONNECT_IVL in milliseconds; -1 turns reconnection off."""

    reconnectIntervalMax: int = 0
    """ZMQ_RECONNECT_IVL_MAX in milliseconds; 0 keeps the interval constant."""

    routerMandatory: bool = True
    """ZMQ_ROUTER_MANDATORY, for ROUTER sockets: a message for a peer at its high-water
    mark waits in the outgoing buffer, and one for an unknown peer raises, where ZeroMQ
    (and txZMQ) would drop either without a word."""

    readBatchSize: int = 500
    """Messages read per reactor turn at most, before yielding to timers and other I/O."""

    singleFrame: bool = False
    """Set True when peers only ever send single-frame messages: each frame is then
    delivered as a message of its own without asking ZeroMQ whether more frames follow,
    which saves about half a microsecond per message. A multipart message sent to such a
    connection arrives as separate one-frame messages (as with a plain ``recv()`` loop)."""

    compiledReceive: bool = True
    """Read with the compiled loop when it was built (see stageflow.transport.compiled):
    multipart-safe at the cost of a plain single-frame ``recv()``. False keeps the
    pure-Python loop. Read when the connection is made, as ``singleFrame`` is."""

    outgoingBufferLimit: int = 10_000
    """Messages held beyond ZeroMQ's high-water mark before ``send()`` blocks."""

    writeBatchSize: int = 500
    """Buffered messages handed to ZeroMQ per reactor turn at most."""

    flushTimeout: float = 5.0
    """Seconds ``shutdown()`` waits for the buffer to drain into ZeroMQ before closing."""

    overflowWarningInterval: float = 5.0
    """Seconds between warnings while ``send()`` is blocked on a full buffer."""

    _log: ClassVar[Logger] = Logger()

    def __init__(
        self,
        factory: ZmqFactory,
        endpoint: ZmqEndpoint | Sequence[ZmqEndpoint] | None = None,
        identity: bytes | None = None,
    ) -> None:
        self.factory = factory
        self.reactor: Any = factory.reactor
        if identity is not None:
            self.identity = identity
        self.socket: zmq.Socket[bytes] = factory.context.socket(self.socketType)
        self._configure_socket()
        # The backend's send skips the sugar layer's routing-id/group argument handling,
        # which costs more than the send itself for small frames.
        self._send = zmq.backend.Socket.send.__get__(self.socket)
        self.fd: int = self.socket.getsockopt(zmq.FD)
        self._closed = False
        self._readable = self.socketType not in _SEND_ONLY
        self._reading = self._readable
        self._read_call: Any = None
        self._in_slice = False
        self._compiled_read = (
            compiled_read_batch
            if compiled_read_batch is not None and self.compiledReceive and not self.singleFrame
            else None
        )
        self._handle: int = self.socket.underlying
        # Single frames as given, multipart messages as lists (the drain tells them apart).
        self._buffer: deque[Any] = deque()
        self._write_call: Any = None
        self._flush_waiters: list[defer.Deferred[None]] = []
        self._producer: Any = None
        self._producer_streaming = False
        self._producer_paused = False
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
        # Messages may have arrived between socket creation and addReader (inproc binds
        # to a peer that is already sending); the FD edge for them may be gone already.
        self._schedule_read()

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
        """Stop watching the socket and close it with a bounded linger. Idempotent.

        What waits in the outgoing buffer is handed to ZeroMQ first, for at most
        ``flushTimeout`` seconds.
        """
        if self._closed:
            return
        self._reading = False
        self._flush_before_close()
        self._before_close()
        self._closed = True
        self.reactor.removeReader(self)
        for call in (self._read_call, self._write_call):
            if call is not None and call.active():
                call.cancel()
        self._read_call = self._write_call = None
        self.socket.close(linger=self.factory.lingerPeriod if self.linger is None else self.linger)
        self.factory.connections.discard(self)

    def _before_close(self) -> None:
        """Last step of a subclass before the socket closes (pending requests, say)."""

    # -- Twisted's IReadDescriptor -----------------------------------------------------

    def fileno(self) -> int:
        """The ZMQ_FD the reactor watches; -1 once closed."""
        return -1 if self._closed else self.fd

    def doRead(self) -> None:
        """The FD fired: read ZMQ_EVENTS (which re-arms the FD) and act on it."""
        if self._closed:
            return
        events = cast(int, self.socket.getsockopt(_EVENTS))
        if events & _POLLIN and self._reading and self._read_call is None:
            self._read_slice()
        if events & _POLLOUT and self._buffer and self._write_call is None and not self._closed:
            self._write_slice()

    def connectionLost(self, reason: Failure) -> None:
        """The reactor dropped us (reactor shutdown, or doRead raised): close cleanly."""
        if not self._closed:
            self._log.info("{prefix} closing: {reason}", prefix=self.logPrefix(), reason=reason)
            self.shutdown()

    def logPrefix(self) -> str:
        """How log lines name this connection."""
        return f"{type(self).__name__}({zmq.SocketType(self.socketType).name})"

    # -- receiving ---------------------------------------------------------------------

    def messageReceived(self, message: list[bytes]) -> None:
        """Called with each whole message, a list of its frames. Override it.

        Subclasses for a socket type unpack the frames and call their own method
        (``onPull``, ``gotMessage``); overriding this replaces that unpacking.
        """
        raise NotImplementedError(
            f"{type(self).__name__} received a message but does not override messageReceived"
        )

    def on_message_error(self, message: list[bytes], failure: Failure) -> None:
        """Called when handling ``message`` raised. The default logs; override to route it.

        The connection keeps reading either way.
        """
        self._log.failure(
            "{prefix}: handling message {message} raised",
            failure,
            prefix=self.logPrefix(),
            message=_truncated_repr(message),
        )

    def _receiver(self) -> Callable[[list[bytes]], object]:
        """What the read loop calls with each message; a subclass may skip a layer."""
        return self.messageReceived

    def _route_error(self, message: list[bytes], failure: Failure) -> None:
        try:
            self.on_message_error(message, failure)
        except Exception:  # noqa: BLE001 -- a failing error handler must not stop reading
            self._log.failure(
                "{prefix}: on_message_error raised while handling {message}",
                prefix=self.logPrefix(),
                message=_truncated_repr(message),
            )

    def _schedule_read(self) -> None:
        if self._read_call is None and self._reading:
            self._read_call = self.reactor.callLater(0, self._read_slice)

    def _read_slice(self) -> None:
        """Read and deliver up to ``readBatchSize`` messages, then decide what is next."""
        self._read_call = None
        if not self._reading:
            return
        # Sends made by handlers during the slice need no read of their own scheduled:
        # the slice goes on reading, and looks at ZMQ_EVENTS when it ends.
        self._in_slice = True
        try:
            if self._compiled_read is not None:
                drained = self._compiled_read(
                    self, self._handle, self._receiver(), self.readBatchSize
                )
            else:
                drained = self._read_batch()
        finally:
            self._in_slice = False
        if drained:
            self._recheck_events()
        else:
            # The slice ended with messages probably still queued; the FD will not fire
            # for them (its edge is spent), so come back on the next turn.
            self._schedule_read()

    def _read_batch(self) -> bool:
        """Deliver up to ``readBatchSize`` messages; True if ZeroMQ had no more."""
        # Locals: this loop is the receive hot path.
        recv = self.socket.recv
        deliver = self._receiver()
        noblock = _NOBLOCK
        single = self.singleFrame
        try:
            for _ in range(self.readBatchSize):
                if single:
                    message = [recv(noblock)]
                else:
                    # recv(flags, copy=False), positional because that is cheaper to call,
                    # gives a Frame whose .more came from the same C call: cheaper than a
                    # getsockopt(RCVMORE) per message, which pyzmq resolves through an enum.
                    frame = recv(noblock, False)
                    message = [frame.bytes]
                    while frame.more:
                        # The rest of a multipart message is already here: ZeroMQ delivers
                        # messages whole.
                        frame = recv(noblock, False)
                        message.append(frame.bytes)
                try:
                    deliver(message)
                except Exception:  # noqa: BLE001 -- any error in user code is routed, not fatal
                    self._route_error(message, Failure())  # type: ignore[no-untyped-call]
                if not self._reading:
                    # The handler paused us (flow control) or shut us down.
                    return False
        except _Again:
            return True
        return False

    def _recheck_events(self) -> None:
        """Look at ZMQ_EVENTS after a libzmq call that may have spent the FD's edge.

        A connect, for one, attaches a pipe without any FD signal, so a buffer that waited
        for a peer would otherwise wait forever; a receive that raised EAGAIN may have
        consumed the edge for a message that landed just then.
        """
        if self._closed or not (self._reading or self._buffer):
            return
        events = cast(int, self.socket.getsockopt(_EVENTS))
        if events & _POLLIN:
            self._schedule_read()
        if events & _POLLOUT:
            self._schedule_write()

    # -- IPushProducer -----------------------------------------------------------------

    def pauseProducing(self) -> None:
        """Stop reading; ZeroMQ queues (up to the HWM) and then backs the sender off."""
        self._reading = False

    def resumeProducing(self) -> None:
        """Read again, starting on the next reactor turn."""
        if self._closed or not self._readable:
            return
        self._reading = True
        self._schedule_read()

    def stopProducing(self) -> None:
        """The consumer is gone for good: shut the connection down."""
        self.shutdown()

    # -- sending -----------------------------------------------------------------------

    @property
    def buffered(self) -> int:
        """Messages waiting in the outgoing buffer, not yet handed to ZeroMQ."""
        return len(self._buffer)

    def send(self, message: Message) -> None:
        """Send ``message`` (bytes, or a sequence of bytes frames sent as one message).

        Never drops and never raises EAGAIN: at ZeroMQ's high-water mark the message
        waits in a FIFO buffer that drains as the socket becomes writable. A caller that
        ignores flow control and fills the buffer to ``outgoingBufferLimit`` is *blocked*
        here, in a poll on the socket, until ZeroMQ takes the oldest buffered message;
        the reactor does not turn meanwhile, and a warning is logged every
        ``overflowWarningInterval`` seconds while it lasts.
        """
        if not self._buffer:
            try:
                # Exact type checks first: they are the common cases and the cheapest.
                kind = type(message)
                if kind is bytes:
                    self._send(message, _NOBLOCK)
                elif kind is list and len(message) == 1:
                    self._send(message[0], _NOBLOCK)
                elif isinstance(message, _SINGLE_FRAME):
                    self._send(message, _NOBLOCK)
                else:
                    self._send_multipart(message)
                if self._reading and self._read_call is None and not self._in_slice:
                    # A send may spend the FD edge announcing an incoming message.
                    self._read_call = self.reactor.callLater(0, self._read_slice)
                return
            except _Again:
                pass
            except zmq.ZMQError as exc:
                raise self._send_error(exc, message) from exc
        self._enqueue(message)

    def flushed(self) -> defer.Deferred[None]:
        """A Deferred that fires once every buffered message has been handed to ZeroMQ."""
        if not self._buffer:
            return defer.succeed(None)
        waiter: defer.Deferred[None] = defer.Deferred()
        self._flush_waiters.append(waiter)
        return waiter

    def _send_error(self, exc: zmq.ZMQError, message: Message) -> Exception:
        """The error a failed send raises: one sentence naming the connection and cause."""
        if self._closed:
            return RuntimeError(f"{self.logPrefix()} was shut down; sending is over")
        if exc.errno == errno.EHOSTUNREACH:
            peer = message[0] if isinstance(message, list | tuple) else message
            return zmq.ZMQError(
                exc.errno,
                f"{self.logPrefix()} has no connected peer {peer!r} to send to "
                "(it never connected, or it went away)",
            )
        return exc

    # -- IConsumer ---------------------------------------------------------------------

    def registerProducer(self, producer: IProducer, streaming: bool) -> None:
        """Let ``producer`` be paused while messages wait in the buffer, resumed when empty."""
        if self._producer is not None:
            raise RuntimeError(f"{self.logPrefix()} already has producer {self._producer!r}")
        self._producer = producer
        self._producer_streaming = streaming
        self._producer_paused = False
        if not streaming:
            producer.resumeProducing()

    def unregisterProducer(self) -> None:
        """Forget the producer; it is no longer paused or resumed from here."""
        self._producer = None
        self._producer_paused = False

    def write(self, data: bytes) -> None:
        """IConsumer's write: ``send(data)``, then ask a pull producer for more if there is room.

        A non-streaming (pull) producer writes once per resumeProducing; when the message
        went straight to ZeroMQ no drain event will follow, so the next request is made
        here, on the next reactor turn.
        """
        self.send(data)
        producer = self._producer
        if producer is not None and not self._producer_streaming and not self._buffer:
            self.reactor.callLater(0, producer.resumeProducing)

    # -- buffering and draining --------------------------------------------------------

    def _send_multipart(self, frames: Sequence[bytes]) -> None:
        # ZeroMQ takes a multipart message whole or not at all: the HWM (and a ROUTER's
        # routing) is checked on the first frame only, so errors can only come from it.
        if not frames:
            raise ValueError(f"{self.logPrefix()}: a message needs at least one frame")
        send = self._send
        last = len(frames) - 1
        for index, frame in enumerate(frames):
            send(frame, _NOBLOCK | _SNDMORE if index < last else _NOBLOCK)

    def _enqueue(self, message: Message) -> None:
        if self._closed:
            raise RuntimeError(f"{self.logPrefix()} was shut down; sending is over")
        if not isinstance(message, _SINGLE_FRAME):
            message = list(message)
            if not message:
                raise ValueError(f"{self.logPrefix()}: a message needs at least one frame")
        if len(self._buffer) >= self.outgoingBufferLimit:
            self._wait_for_room()
        was_empty = not self._buffer
        self._buffer.append(message)
        if was_empty:
            # The failed send may have spent the FD edge announcing free space.
            self._recheck_events()
        if self._producer is not None and self._producer_streaming and not self._producer_paused:
            # Pause at the first message that has to wait: ZeroMQ's queue (HWM) is full,
            # so more reading upstream would only grow our buffer. ZeroMQ signals room
            # again only once its peer has taken half the HWM, so this toggles rarely.
            self._producer_paused = True
            self._producer.pauseProducing()

    def _schedule_write(self) -> None:
        if self._write_call is None and self._buffer and not self._closed:
            self._write_call = self.reactor.callLater(0, self._write_slice)

    def _send_buffered_head(self) -> None:
        """Send the oldest buffered message and drop it from the buffer; EAGAIN passes up.

        A message for a ROUTER peer that went away while it waited is dropped with a
        warning: nobody is left to receive it.
        """
        message = self._buffer[0]
        try:
            if type(message) is list:
                self._send_multipart(message)
            else:
                self._send(message, _NOBLOCK)
        except _Again:
            raise
        except zmq.ZMQError as exc:
            if exc.errno != errno.EHOSTUNREACH:
                raise
            self._log.warn(
                "{prefix}: dropped a buffered message for peer {peer!r}, which went away",
                prefix=self.logPrefix(),
                peer=message[0] if type(message) is list else message,
            )
        self._buffer.popleft()

    def _write_slice(self) -> None:
        """Hand up to ``writeBatchSize`` buffered messages to ZeroMQ."""
        self._write_call = None
        if self._closed:
            return
        try:
            for _ in range(self.writeBatchSize):
                if not self._buffer:
                    break
                self._send_buffered_head()
        except _Again:
            if cast(int, self.socket.getsockopt(_EVENTS)) & _POLLOUT:
                self._write_call = self.reactor.callLater(_BLOCKED_PEER_RETRY, self._write_slice)
            self._recheck_events()
            return
        finally:
            if self._readable:
                # Sends may have spent the FD edge announcing an incoming message.
                self._schedule_read()
        if self._buffer:
            self._schedule_write()
        else:
            self._on_drained()

    def _on_drained(self) -> None:
        if self._producer is not None:
            if self._producer_paused:
                self._producer_paused = False
                self._producer.resumeProducing()
            elif not self._producer_streaming:
                self._producer.resumeProducing()
        waiters, self._flush_waiters = self._flush_waiters, []
        for waiter in waiters:
            waiter.callback(None)

    def _wait_for_room(self) -> None:
        """Block until ZeroMQ takes the oldest buffered message (the documented overflow)."""
        poller = zmq.Poller()
        poller.register(self.socket, zmq.POLLOUT)
        interval_ms = int(self.overflowWarningInterval * 1000)
        started = time.monotonic()
        while len(self._buffer) >= self.outgoingBufferLimit:
            try:
                self._send_buffered_head()
                continue
            except _Again:
                pass
            if not poller.poll(interval_ms):
                self._log.warn(
                    "{prefix}: send() blocked {seconds:.0f}s: buffer full ({count} messages) "
                    "and the peer takes nothing; pause the producer to avoid this",
                    prefix=self.logPrefix(),
                    seconds=time.monotonic() - started,
                    count=len(self._buffer),
                )
        # The blocking sends may have spent the FD edge announcing more room.
        self._recheck_events()

    def _flush_blocking(self, timeout: float) -> None:
        """Hand the buffer to ZeroMQ, waiting at most ``timeout`` seconds for room."""
        poller = zmq.Poller()
        poller.register(self.socket, zmq.POLLOUT)
        deadline = time.monotonic() + timeout
        while self._buffer:
            try:
                self._send_buffered_head()
                continue
            except _Again:
                pass
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            poller.poll(max(1, int(remaining * 1000)))

    def _flush_before_close(self) -> None:
        if self._buffer:
            self._flush_blocking(self.flushTimeout)
        lost = len(self._buffer)
        if lost:
            self._log.error(
                "{prefix}: {count} messages still buffered after {timeout}s; "
                "no peer took them and they are lost",
                prefix=self.logPrefix(),
                count=lost,
                timeout=self.flushTimeout,
            )
            self._buffer.clear()
        waiters, self._flush_waiters = self._flush_waiters, []
        for waiter in waiters:
            if lost:
                waiter.errback(ConnectionLost(f"shut down with {lost} messages undelivered"))
            else:
                waiter.callback(None)
        if self._producer is not None:
            # Twisted's contract: a consumer going away stops its producer for good.
            producer, self._producer = self._producer, None
            producer.stopProducing()

    # -- socket options ----------------------------------------------------------------

    def _configure_socket(self) -> None:
        socket = self.socket
        socket.setsockopt(zmq.SNDHWM, self.highWaterMark)
        socket.setsockopt(zmq.RCVHWM, self.highWaterMark)
        socket.setsockopt(
            zmq.LINGER, self.factory.lingerPeriod if self.linger is None else self.linger
        )
        socket.setsockopt(zmq.MAXMSGSIZE, self.maxMessageSize)
        socket.setsockopt(zmq.RATE, self.multicastRate)
        socket.setsockopt(zmq.MULTICAST_LOOP, int(self.allowLoopbackMulticast))
        if self.tcpKeepalive:
            socket.setsockopt(zmq.TCP_KEEPALIVE, self.tcpKeepalive)
            for option, value in (
                (zmq.TCP_KEEPALIVE_CNT, self.tcpKeepaliveCount),
                (zmq.TCP_KEEPALIVE_IDLE, self.tcpKeepaliveIdle),
                (zmq.TCP_KEEPALIVE_INTVL, self.tcpKeepaliveInterval),
            ):
                if value > 0:
                    socket.setsockopt(option, value)
        socket.setsockopt(zmq.RECONNECT_IVL, self.reconnectInterval)
        socket.setsockopt(zmq.RECONNECT_IVL_MAX, self.reconnectIntervalMax)
        if self.socketType == zmq.ROUTER and self.routerMandatory:
            socket.setsockopt(zmq.ROUTER_MANDATORY, 1)
        if self.identity is not None:
            socket.setsockopt(zmq.ROUTING_ID, self.identity)

    def __repr__(self) -> str:
        # txZMQ's form, which its users' logs and tests compare against.
        return f"{type(self).__name__}({self.factory!r}, {self.endpoints!r})"
