"""The ZmqFactory: one ZeroMQ context, one reactor, and the connections made with them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import zmq

if TYPE_CHECKING:
    from stageflow.transport.connection import ZmqConnection


class _GlobalReactor:
    """The class-level default of ``ZmqFactory.reactor``: Twisted's global reactor.

    Looked up on first use, not at import, so that importing stageflow.transport never
    installs the global reactor behind a caller's back (txZMQ imported it at module level).
    Assigning ``ZmqFactory.reactor`` (or a subclass's, or an instance's) replaces it.
    """

    def __get__(self, instance: object, owner: type | None = None) -> Any:
        from twisted.internet import reactor

        return reactor


class ZmqFactory:
    """Owns the ZeroMQ context and the reactor that every connection made from it uses.

    ``reactor`` is Twisted's global reactor unless one is passed in, set on the class (as
    txZMQ's users do) or set on the instance before connections are made; any reactor
    providing IReactorFDSet and IReactorTime works, so a test or a worker stays
    independent of the global one. ``context`` defaults to a new ``zmq.Context`` that the
    factory terminates on ``shutdown()``; a context passed in belongs to the caller and is
    left running.
    """

    reactor: Any = _GlobalReactor()

    ioThreads: int = 1
    """ZeroMQ I/O threads of a context the factory creates itself."""

    lingerPeriod: int = 2_000
    """ZMQ_LINGER in milliseconds for every connection that does not set its own
    ``linger``: how long a closed socket keeps delivering what ZeroMQ still holds.
    Bounded so that ``shutdown()`` and context termination never hang; longer than
    txZMQ's 100 ms so that a busy peer on another host still gets the last messages."""

    def __init__(self, reactor: Any = None, context: zmq.Context[Any] | None = None) -> None:
        if reactor is not None:
            self.reactor = reactor
        self._owns_context = context is None
        self.context: zmq.Context[Any] = zmq.Context(self.ioThreads) if context is None else context
        self.connections: set[ZmqConnection] = set()
        self._shutdown_trigger: Any = None
        self._shutdown_reactor: Any = None

    def shutdown(self) -> None:
        """Shut every connection down (flushing what was sent), then end the context.

        Bounded: each connection flushes for at most its ``flushTimeout`` and closes
        with its linger, so terminating the context cannot hang on our sockets. Idempotent.
        """
        for connection in list(self.connections):
            connection.shutdown()
        if self._shutdown_trigger is not None:
            self._shutdown_reactor.removeSystemEventTrigger(self._shutdown_trigger)
            self._shutdown_trigger = None
        if self._owns_context and not self.context.closed:
            self.context.term()

    def registerForShutdown(self) -> None:
        """Shut this factory down before the reactor stops (txZMQ's name)."""
        if self._shutdown_trigger is None:
            # Remembered: the trigger belongs to this reactor even if .reactor changes.
            self._shutdown_reactor = self.reactor
            self._shutdown_trigger = self.reactor.addSystemEventTrigger(
                "before", "shutdown", self._shutdown_with_reactor
            )

    def _shutdown_with_reactor(self) -> None:
        # The trigger is firing, so it must not be removed again (Twisted warns).
        self._shutdown_trigger = None
        self.shutdown()

    def __repr__(self) -> str:
        return "ZmqFactory()"
