"""ZmqPushConnection: send without loss, without raising EAGAIN, with back-pressure.

``push()`` tries a direct non-blocking send. When ZeroMQ is at its high-water mark the
message joins a bounded outgoing buffer (FIFO, so order is kept), which drains as the
socket becomes writable. The connection is an IConsumer: a registered producer (typically
the ZmqPullConnection of the same stage) is paused as soon as a message has to wait and
resumed when the buffer is empty again, so a pull→push stage stops reading while its
downstream is full.

Overflow: a caller that ignores flow control and fills the buffer to
``outgoingBufferLimit`` is *blocked* in ``push()``: it waits in a poll on the socket
until ZeroMQ accepts the oldest buffered message, which is lossless and never raises
EAGAIN. The reactor does not turn while it waits, so a consumer on the same reactor cannot
help; a warning is logged every ``overflowWarningInterval`` seconds while it lasts.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence
from typing import Any, cast

import zmq
from twisted.internet import defer
from twisted.internet.error import ConnectionLost
from twisted.internet.interfaces import (
    IConsumer,
    IFileDescriptor,
    IProducer,
    IReadDescriptor,
)
from zope.interface import implementer  # type: ignore[import-untyped]

from stageflow.transport.connection import ZmqConnection
from stageflow.transport.endpoint import ZmqEndpoint
from stageflow.transport.factory import ZmqFactory

Message = bytes | bytearray | memoryview | Sequence[bytes]
"""What push() takes: one frame, or a sequence of frames sent as one message."""

_NOBLOCK = zmq.NOBLOCK
_SNDMORE = zmq.SNDMORE
_POLLOUT = zmq.POLLOUT
_Again = zmq.Again
_SINGLE_FRAME = (bytes, bytearray, memoryview, zmq.Frame)


@implementer(IReadDescriptor, IFileDescriptor, IConsumer)
class ZmqPushConnection(ZmqConnection):
    """A PUSH socket: ``push()`` a message to the next peer in ZeroMQ's round-robin."""

    socketType = zmq.PUSH

    outgoingBufferLimit: int = 10_000
    """Messages held beyond ZeroMQ's high-water mark before ``push()`` blocks."""

    writeBatchSize: int = 500
    """Buffered messages handed to ZeroMQ per reactor turn at most."""

    flushTimeout: float = 5.0
    """Seconds ``shutdown()`` waits for the buffer to drain into ZeroMQ before closing."""

    overflowWarningInterval: float = 5.0
    """Seconds between warnings while ``push()`` is blocked on a full buffer."""

    def __init__(
        self,
        factory: ZmqFactory,
        endpoint: ZmqEndpoint | Sequence[ZmqEndpoint] | None = None,
    ) -> None:
        # Single frames as given, multipart messages as lists (the drain tells them apart).
        self._buffer: deque[Any] = deque()
        self._write_call: Any = None
        self._flush_waiters: list[defer.Deferred[None]] = []
        self._producer: Any = None
        self._producer_streaming = False
        self._producer_paused = False
        super().__init__(factory, endpoint)
        # The backend's send skips the sugar layer's routing-id/group argument handling,
        # which costs more than the send itself for small frames.
        self._send = zmq.backend.Socket.send.__get__(self.socket)

    @property
    def buffered(self) -> int:
        """Messages waiting in the outgoing buffer, not yet handed to ZeroMQ."""
        return len(self._buffer)

    def push(self, message: Message) -> None:
        """Send ``message`` (bytes, or a sequence of bytes frames sent as one message).

        Never drops and never raises EAGAIN; see the module docstring for what happens
        when the outgoing buffer is full.
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
                return
            except _Again:
                pass
            except zmq.ZMQError as exc:
                if self._closed:
                    raise RuntimeError(f"{self.logPrefix()} was shut down; push() is over") from exc
                raise
        self._enqueue(message)

    def flushed(self) -> defer.Deferred[None]:
        """A Deferred that fires once every buffered message has been handed to ZeroMQ."""
        if not self._buffer:
            return defer.succeed(None)
        waiter: defer.Deferred[None] = defer.Deferred()
        self._flush_waiters.append(waiter)
        return waiter

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
        """IConsumer's write: ``push(data)``, then ask a pull producer for more if there is room.

        A non-streaming (pull) producer writes once per resumeProducing; when the message
        went straight to ZeroMQ no drain event will follow, so the next request is made
        here, on the next reactor turn.
        """
        self.push(data)
        producer = self._producer
        if producer is not None and not self._producer_streaming and not self._buffer:
            self.reactor.callLater(0, producer.resumeProducing)

    # -- buffering and draining --------------------------------------------------------

    def _send_multipart(self, frames: Sequence[bytes]) -> None:
        # ZeroMQ takes a multipart message whole or not at all: the HWM is checked on the
        # first frame only, so EAGAIN can only come from the first send.
        if not frames:
            raise ValueError(f"{self.logPrefix()}: a message needs at least one frame")
        send = self._send
        last = len(frames) - 1
        for index, frame in enumerate(frames):
            send(frame, _NOBLOCK | _SNDMORE if index < last else _NOBLOCK)

    def _enqueue(self, message: Message) -> None:
        if self._closed:
            raise RuntimeError(f"{self.logPrefix()} was shut down; push() is over")
        if len(self._buffer) >= self.outgoingBufferLimit:
            self._wait_for_room()
        if not isinstance(message, _SINGLE_FRAME):
            message = list(message)
            if not message:
                raise ValueError(f"{self.logPrefix()}: a message needs at least one frame")
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

    def _handle_events(self, events: int) -> None:
        if events & _POLLOUT and self._buffer and self._write_call is None:
            self._write_slice()

    def _schedule_write(self) -> None:
        if self._write_call is None and not self._closed:
            self._write_call = self.reactor.callLater(0, self._write_slice)

    def _recheck_events(self) -> None:
        if (
            self._buffer
            and not self._closed
            and cast(int, self.socket.getsockopt(zmq.EVENTS)) & _POLLOUT
        ):
            self._schedule_write()

    def _send_buffered_head(self) -> None:
        """Send the oldest buffered message and drop it from the buffer; EAGAIN passes up."""
        message = self._buffer[0]
        if type(message) is list:
            self._send_multipart(message)
        else:
            self._send(message, _NOBLOCK)
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
            self._recheck_events()
            return
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
                    "{prefix}: push() blocked {seconds:.0f}s: buffer full ({count} messages) "
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

    def _before_close(self) -> None:
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

    def _cancel_scheduled(self) -> None:
        if self._write_call is not None:
            self._write_call.cancel()
            self._write_call = None
