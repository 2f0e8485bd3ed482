"""ZmqPullConnection: a PULL socket that hands each message to ``onPull``."""

from __future__ import annotations

from collections.abc import Callable

import zmq

from stageflow.transport.connection import ZmqConnection


class ZmqPullConnection(ZmqConnection):
    """A PULL socket: override ``onPull`` to receive each message as a list of frames.

    Reads happen in bounded slices and the connection is an IPushProducer, as every
    ZmqConnection is; see :mod:`stageflow.transport.connection`.
    """

    socketType = zmq.PULL

    def messageReceived(self, message: list[bytes]) -> None:
        """Hand ``message`` to ``onPull`` (txZMQ's dispatch)."""
        self.onPull(message)

    def onPull(self, message: list[bytes]) -> None:
        """Called with each message, a list of its frames. Override it."""
        raise NotImplementedError(
            f"{type(self).__name__} received a message but does not override onPull"
        )

    def _receiver(self) -> Callable[[list[bytes]], object]:
        # Unless a subclass reroutes messageReceived, the read loop calls onPull itself:
        # one Python call less per message on the engine's hot path.
        if type(self).messageReceived is ZmqPullConnection.messageReceived:
            return self.onPull
        return self.messageReceived
