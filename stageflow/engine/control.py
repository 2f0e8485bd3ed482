"""The control plane between the coordinator and its workers: the protocol, in one place.

Sockets::

    worker DEALER (identity = worker key) ──► coordinator ROUTER   what a worker says, but beats
    coordinator ROUTER ──► worker DEALER                           commands
    worker DEALER (worker key + BEATS) ──► coordinator ROUTER      its beats, from a thread
    coordinator PUB (a thread of its own) ──► worker SUB           the coordinator's heartbeat

Every message a worker sends (its *hello* aside) is a control message of
:mod:`stageflow.engine.wire`, a JSON object whose ``"t"`` says what it is:

``beat``      liveness, with the record inside ``process()`` now (``cur``: root, attempt)
              and for how long (``for``, seconds)
``ready``     ``setup()`` is done; frames may come
``failed``    ``setup()`` or the stage's import raised (``error``); the worker exits
``done``      progress on frame ``f``: the packed acknowledgements of the records processed
              since the last ``done`` (``n`` of them), their dead letters (``dead``) and,
              as further parts, the data frames with their outputs; ``end`` when the frame
              is wholly processed. Acks and outputs travel together, so each record is
              either wholly done or wholly redone.
``finish-out`` records ``finish()`` returned (payload: JSON lines)
``finished``  ``finish()`` ran (``dead``: its dead letter, if it raised)

Commands (coordinator to worker): ``finish`` (end of stream: run ``finish()``),
``retire`` (finish, then exit: the worker is being scaled down) and ``stop`` (exit now).

The hello is signed but not in the wire format, so a worker of another version can be told
which versions differ instead of being dropped as garbled: ``[b"hello", JSON, digest]``.

A worker joining from another host (:mod:`stageflow.engine.join`) does not know the run's
secret yet: on the coordinator's CURVE-served ROUTER it first asks ``[b"join", JSON]`` (its
host, pid, wire version, public key, wanted stage) and is answered ``[b"welcome", JSON
settings]`` or ``[b"refused", reason]``; from then on it is a worker like any other.

Liveness follows zguide's Paranoid Pirate: each side sends a heartbeat every
``heartbeat_timeout / HEARTBEAT_LIVENESS`` seconds, any message counts as one, and a peer
silent for ``heartbeat_timeout`` is gone. The coordinator's heartbeat comes from a thread, so
a caller that pauses between results (``stageflow run | less``) does not lose its workers.
"""

from __future__ import annotations

import hmac
import json
import threading
from typing import Any

import zmq

from stageflow.engine import wire
from stageflow.security import Keys

__all__ = [
    "BEAT",
    "BEATS",
    "HEARTBEAT_LIVENESS",
    "HELLO",
    "JOIN",
    "REFUSED",
    "WELCOME",
    "Pulse",
    "decode_hello",
    "encode_hello",
    "heartbeat_interval",
    "is_beat",
]

#: Heartbeats a peer may miss before it counts as lost.
HEARTBEAT_LIVENESS = 5
#: First part of a worker's registration.
HELLO = b"hello"
#: What the coordinator's heartbeat publishes.
BEAT = b"beat"
#: Appended to a worker's key, the identity of the DEALER its beats come on.
BEATS = b"~beats"
#: A joining worker's request, and the coordinator's two answers to it.
JOIN = b"join"
WELCOME = b"welcome"
REFUSED = b"refused"


def heartbeat_interval(timeout: float) -> float:
    """Seconds between two heartbeats for a given ``heartbeat_timeout``."""
    return timeout / HEARTBEAT_LIVENESS


def encode_hello(info: dict[str, Any], key: bytes) -> list[bytes]:
    body = json.dumps(info, separators=(",", ":")).encode()
    return [HELLO, *wire.sign([body], key)]


def decode_hello(parts: list[bytes], key: bytes) -> dict[str, Any] | None:
    """The registration in ``parts``, or None when they are not a hello signed with ``key``."""
    if len(parts) != 3 or parts[0] != HELLO:
        return None
    body, digest = parts[1], parts[2]
    if not hmac.compare_digest(wire.sign([body], key)[1], digest):
        return None
    try:
        info = json.loads(body)
    except ValueError:
        return None
    return info if isinstance(info, dict) else None


def is_beat(parts: list[bytes], key: bytes) -> bool:
    return len(parts) == 2 and hmac.compare_digest(wire.sign([BEAT], key)[1], parts[1])


class Pulse:
    """The coordinator's heartbeat: a thread publishing a signed beat every ``interval``."""

    def __init__(
        self,
        ctx: zmq.Context[Any],
        bind: str,
        key: bytes,
        interval: float,
        keys: Keys | None = None,
    ) -> None:
        self._socket: zmq.Socket[bytes] = ctx.socket(zmq.PUB)
        if keys is not None:
            keys.serve(self._socket)
        self._socket.bind(bind)
        self.address: str = self._socket.getsockopt_string(zmq.LAST_ENDPOINT)
        self._beat = wire.sign([BEAT], key)
        self._interval = interval
        self._stopped = threading.Event()
        # The socket belongs to the thread from here on: pyzmq sockets are not thread-safe.
        self._thread = threading.Thread(target=self._run, name="stageflow-pulse", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stopped.wait(self._interval):
                self._socket.send_multipart(self._beat)
        finally:
            self._socket.close(linger=0)

    def close(self) -> None:
        self._stopped.set()
        self._thread.join()
