"""ZmqPullConnection: receive messages in bounded slices and hand each to ``onPull``.

A slice reads at most ``readBatchSize`` messages with NOBLOCK, then yields to the
reactor, so a burst of any size cannot starve timers or other connections (txZMQ drained
a whole burst in one reactor turn). The connection is an IPushProducer: a consumer it
feeds (typically a ZmqPushConnection whose peer is slow) pauses it, and it stops reading
until resumed, leaving the backlog in ZeroMQ's queues where the high-water mark bounds it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import zmq
from twisted.internet.interfaces import IFileDescriptor, IPushProducer, IReadDescriptor
from twisted.python.failure import Failure
from zope.interface import implementer  # type: ignore[import-untyped]

from stageflow.transport.connection import ZmqConnection
from stageflow.transport.endpoint import ZmqEndpoint
from stageflow.transport.factory import ZmqFactory

_NOBLOCK = zmq.NOBLOCK
_POLLIN = zmq.POLLIN
_Again = zmq.Again


def _truncated_repr(message: list[bytes], limit: int = 200) -> str:
    text = repr(message)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} chars)"


@implementer(IReadDescriptor, IFileDescriptor, IPushProducer)
class ZmqPullConnection(ZmqConnection):
    """A PULL socket: override ``onPull`` to receive each message as a list of frames."""

    socketType = zmq.PULL

    readBatchSize: int = 500
    """Messages read per reactor turn at most, before yielding to timers and other I/O."""

    singleFrame: bool = False
    """Set True when peers only ever send single-frame messages: each frame is then
    delivered as a message of its own without asking ZeroMQ whether more frames follow,
    which saves about half a microsecond per message. A multipart message sent to such a
    connection arrives as separate one-frame messages (as with a plain ``recv()`` loop)."""

    def __init__(
        self,
        factory: ZmqFactory,
        endpoint: ZmqEndpoint | Sequence[ZmqEndpoint] | None = None,
    ) -> None:
        # Set before the base __init__, which binds or connects and then looks at ZMQ_EVENTS.
        self._reading = True
        self._read_call: Any = None
        super().__init__(factory, endpoint)
        # Messages may have arrived between socket creation and addReader (inproc binds
        # to a peer that is already sending); the FD edge for them may be gone already.
        self._schedule_read()

    def onPull(self, message: list[bytes]) -> None:
        """Called with each message, a list of its frames. Override it."""

    def on_pull_error(self, message: list[bytes], failure: Failure) -> None:
        """Called when ``onPull`` raised. The default logs; override to route the message.

        The connection keeps reading either way.
        """
        self._log.failure(
            "{prefix}: onPull raised on message {message}",
            failure,
            prefix=self.logPrefix(),
            message=_truncated_repr(message),
        )

    def _route_error(self, message: list[bytes], failure: Failure) -> None:
        try:
            self.on_pull_error(message, failure)
        except Exception:  # noqa: BLE001 -- a failing error handler must not stop reading
            self._log.failure(
                "{prefix}: on_pull_error raised while handling {message}",
                prefix=self.logPrefix(),
                message=_truncated_repr(message),
            )

    # -- IPushProducer -----------------------------------------------------------------

    def pauseProducing(self) -> None:
        """Stop reading; ZeroMQ queues (up to the HWM) and then backs the sender off."""
        self._reading = False

    def resumeProducing(self) -> None:
        """Read again, starting on the next reactor turn."""
        if self._closed:
            return
        self._reading = True
        self._schedule_read()

    def stopProducing(self) -> None:
        """The consumer is gone for good: shut the connection down."""
        self.shutdown()

    # -- the read loop -----------------------------------------------------------------

    def _handle_events(self, events: int) -> None:
        if events & _POLLIN and self._reading and self._read_call is None:
            self._read_slice()

    def _schedule_read(self) -> None:
        if self._read_call is None and not self._closed:
            self._read_call = self.reactor.callLater(0, self._read_slice)

    def _read_slice(self) -> None:
        """Read and deliver up to ``readBatchSize`` messages, then decide what is next."""
        self._read_call = None
        if not self._reading or self._closed:
            return
        # Locals: this loop is the receive hot path.
        recv = self.socket.recv
        on_pull = self.onPull
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
                    on_pull(message)
                except Exception:  # noqa: BLE001 -- any error in user code is routed, not fatal
                    self._route_error(message, Failure())  # type: ignore[no-untyped-call]
                if not self._reading:
                    # onPull paused us (flow control) or shut us down.
                    return
        except _Again:
            self._recheck_events()
            return
        # The slice ended with messages probably still queued; the FD will not fire for
        # them (its edge is spent), so come back on the next turn.
        self._schedule_read()

    def _recheck_events(self) -> None:
        # After a receive that raised EAGAIN (or an endpoint change) the FD edge may be
        # spent; a message landing just then is only visible through ZMQ_EVENTS.
        if (
            self._reading
            and not self._closed
            and cast(int, self.socket.getsockopt(zmq.EVENTS)) & _POLLIN
        ):
            self._schedule_read()

    def _before_close(self) -> None:
        self._reading = False

    def _cancel_scheduled(self) -> None:
        if self._read_call is not None:
            self._read_call.cancel()
            self._read_call = None
