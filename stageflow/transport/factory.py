"""The ZmqFactory: one ZeroMQ context, one reactor, and the connections made with them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import zmq

if TYPE_CHECKING:
    from stageflow.transport.connection import ZmqConnection


class ZmqFactory:
    """Owns the ZeroMQ context and the reactor that every connection made from it uses.

    ``reactor`` defaults to Twisted's global reactor; pass a fresh reactor (or any reactor
    providing IReactorFDSet and IReactorTime) to keep a test or a worker independent of it.
    ``context`` defaults to a new ``zmq.Context`` that the factory terminates on
    ``shutdown()``; a context passed in belongs to the caller and is left running.
    """

    ioThreads: int = 1
    """ZeroMQ I/O threads of a context the factory creates itself."""

    def __init__(self, reactor: Any = None, context: zmq.Context[Any] | None = None) -> None:
        if reactor is None:
            # Imported here, not at module level, so that importing stageflow.transport
            # never installs the global reactor behind a caller's back.
            from twisted.internet import reactor as global_reactor

            reactor = global_reactor
        self.reactor: Any = reactor
        self._owns_context = context is None
        self.context: zmq.Context[Any] = zmq.Context(self.ioThreads) if context is None else context
        self.connections: set[ZmqConnection] = set()
        self._shutdown_trigger: Any = None

    def shutdown(self) -> None:
        """Shut every connection down (flushing what was pushed), then end the context.

        Bounded: each push connection flushes for at most its ``flushTimeout`` and closes
        with its ``linger``, so terminating the context cannot hang on our sockets.
        """
        for connection in list(self.connections):
            connection.shutdown()
        if self._shutdown_trigger is not None:
            self.reactor.removeSystemEventTrigger(self._shutdown_trigger)
            self._shutdown_trigger = None
        if self._owns_context and not self.context.closed:
            self.context.term()

    def registerForShutdown(self) -> None:
        """Shut this factory down before the reactor stops (txZMQ's name)."""
        if self._shutdown_trigger is None:
            self._shutdown_trigger = self.reactor.addSystemEventTrigger(
                "before", "shutdown", self._shutdown_with_reactor
            )

    def _shutdown_with_reactor(self) -> None:
        # The trigger is firing, so it must not be removed again (Twisted warns).
        self._shutdown_trigger = None
        self.shutdown()
