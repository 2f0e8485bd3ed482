"""The worker's end of the control plane: one thread that owns its DEALER and its SUB.

pyzmq sockets are not thread-safe, so the worker's main (reactor) thread never touches them:
it puts each message on a queue and wakes this thread with a one-byte inproc message, only
when the thread is not already awake to drain the queue, and this thread passes commands to
the reactor with ``callFromThread``. Every ZeroMQ call lets go of the GIL, and taking it back
from a busy reactor thread can wait a whole switch interval, so a busy worker's messages go
over in bursts of one wake-up each instead of costing the reactor a GIL hand-off per part.
Because the thread runs while ``process()`` does, the worker keeps beating through a slow
record, and each beat tells which record is inside ``process()`` and for how long, so the
coordinator can report a stuck one. When the coordinator falls silent for
``heartbeat_timeout`` (its process hung, or gone from another host), this thread ends the
process: nothing outlives a run.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import zmq

from stageflow.engine import control, wire
from stageflow.engine.runner import CurrentRecord
from stageflow.security import Keys

__all__ = ["EXIT_COORDINATOR_LOST", "Link"]

log = logging.getLogger("stageflow.worker")

#: A worker's exit status when it stopped hearing its coordinator.
EXIT_COORDINATOR_LOST = 4
_WAKE = b"w"
#: Queued after the last message: the thread sends what came before, then ends.
_CLOSE: list[bytes] = []
_names = itertools.count()


class Link:
    """Connects to the coordinator and runs the worker's control thread."""

    def __init__(
        self,
        settings: dict[str, Any],
        current: CurrentRecord | None,
        on_command: Callable[[dict[str, Any]], None],
        keys: Keys | None = None,
    ) -> None:
        self.key: str = settings["key"]
        self.secret = bytes.fromhex(settings["secret"])
        self.timeout: float = settings["heartbeat_timeout"]
        self.interval = control.heartbeat_interval(self.timeout)
        self.current = current
        self.on_command = on_command
        self.ctx: zmq.Context[Any] = zmq.Context()
        inproc = f"inproc://stageflow-link-{next(_names)}"
        self._inbox: zmq.Socket[bytes] = self.ctx.socket(zmq.PULL)
        self._inbox.bind(inproc)
        self._tx: zmq.Socket[bytes] = self.ctx.socket(zmq.PUSH)
        self._tx.setsockopt(zmq.SNDHWM, 0)
        self._tx.connect(inproc)
        self._outbox: deque[list[bytes]] = deque()
        # Set by the reactor thread when it wakes this thread, cleared by this thread
        # before it drains the outbox: a message queued after the drain began wakes it again.
        self._awake = False
        self._dealer: zmq.Socket[bytes] = self.ctx.socket(zmq.DEALER)
        self._sub: zmq.Socket[bytes] = self.ctx.socket(zmq.SUB)
        self._dealer.setsockopt(zmq.IDENTITY, self.key.encode())
        self._dealer.setsockopt(zmq.SNDHWM, 0)
        self._dealer.setsockopt(zmq.MAXMSGSIZE, settings["max_message_size"])
        if keys is not None:  # joined from another host: both sockets cross the network
            keys.connect(self._dealer)
            keys.connect(self._sub)
        self._dealer.connect(settings["control"])
        self._sub.setsockopt(zmq.SUBSCRIBE, b"")
        self._sub.connect(settings["heartbeat"])
        self._thread: threading.Thread | None = None

    def hello(self, stage: str, address: str) -> None:
        """Register, then start beating: from here on the coordinator watches this worker."""
        info = {
            "key": self.key,
            "stage": stage,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "address": address,
            "wire": wire.VERSION,
        }
        self._dealer.send_multipart(control.encode_hello(info, self.secret))
        self._thread = threading.Thread(target=self._run, name="stageflow-link", daemon=True)
        self._thread.start()

    def send(
        self, message: dict[str, Any], payload: bytes = b"", frames: Sequence[list[bytes]] = ()
    ) -> None:
        """Queue a control message (and data frames after it) for the coordinator."""
        parts = wire.encode_control(message, self.secret, payload)
        for frame in frames:
            parts += frame
        self._outbox.append(parts)
        if not self._awake:
            self._awake = True
            self._tx.send(_WAKE)

    def close(self, deadline: float) -> None:
        """Send what is queued (until ``deadline``, a monotonic time) and end the thread."""
        self._outbox.append(_CLOSE)
        self._tx.send(_WAKE)
        if self._thread is not None:
            self._thread.join(max(0.0, deadline - time.monotonic()))
        self._tx.close(linger=0)
        if self._thread is None:
            for sock in (self._inbox, self._dealer, self._sub):
                sock.close(linger=0)
        if self._thread is None or not self._thread.is_alive():
            self.ctx.term()

    def _run(self) -> None:
        poller = zmq.Poller()
        for sock in (self._inbox, self._dealer, self._sub):
            poller.register(sock, zmq.POLLIN)
        heard = time.monotonic()
        next_beat = heard
        while True:
            wait = max(0.0, next_beat - time.monotonic())
            events = dict(poller.poll(int(wait * 1000) + 1))
            now = time.monotonic()
            if self._inbox in events and self._forward():
                return
            if self._dealer in events:
                heard = now
                self._commands()
            if self._sub in events:
                with contextlib.suppress(zmq.Again):
                    while True:
                        if control.is_beat(self._sub.recv_multipart(zmq.NOBLOCK), self.secret):
                            heard = now
            if now - heard > self.timeout:
                log.error(
                    "worker %s heard nothing from the coordinator for %.1fs; it is gone, exiting",
                    self.key,
                    now - heard,
                )
                os._exit(EXIT_COORDINATOR_LOST)
            if now >= next_beat:
                next_beat = now + self.interval
                beat: dict[str, Any] = {"t": "beat", "cur": None}
                inside = self.current.inside() if self.current is not None else None
                if inside is not None:
                    root, attempt, started = inside
                    beat["cur"] = [root, attempt]
                    beat["for"] = round(time.perf_counter() - started, 3)
                self._dealer.send_multipart(wire.encode_control(beat, self.secret))

    def _forward(self) -> bool:
        """Pass the main thread's messages on; True once it asked to close."""
        with contextlib.suppress(zmq.Again):
            while True:
                self._inbox.recv(zmq.NOBLOCK)
        self._awake = False
        outbox = self._outbox
        while outbox:
            parts = outbox.popleft()
            if parts is _CLOSE:
                deadline = 1000  # ms to hand the last messages to the network
                self._dealer.close(linger=deadline)
                self._inbox.close(linger=0)
                self._sub.close(linger=0)
                return True
            self._dealer.send_multipart(parts)
        return False

    def _commands(self) -> None:
        while True:
            try:
                parts = self._dealer.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                command, _ = wire.decode_control(parts, self.secret)
            except wire.WireError as exc:
                log.warning("worker %s dropped a malformed command: %s", self.key, exc)
                continue
            self.on_command(command)
