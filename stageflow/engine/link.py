"""The worker's heartbeat thread: beats to the coordinator, and its beats watched.

Everything else a worker says (hello, ready, progress with outputs, snapshots, the end of
``finish()``) goes from its reactor thread on its control DEALER (:mod:`stageflow.engine.
worker`), which also takes the coordinator's commands: one socket and one thread, so those
messages keep their order, and a frame's outputs cost no hand-off to another thread (every
ZeroMQ call lets go of the GIL, and taking it back from a busy thread can wait a whole switch
interval).

This thread owns a DEALER of its own, named by the worker's key with :data:`~stageflow.
engine.control.BEATS` appended, and the SUB of the coordinator's heartbeat. Because it runs
while ``process()`` does, the worker keeps beating through a slow record, and each beat tells
which record is inside ``process()`` and for how long (read from the current-record file),
so the coordinator can report a stuck one. When the coordinator falls silent for
``heartbeat_timeout`` (its process hung, or gone from another host), this thread ends the
process: nothing outlives a run.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import threading
import time
from typing import Any

import zmq

from stageflow.engine import control, wire
from stageflow.engine.runner import CurrentRecord
from stageflow.security import Keys

__all__ = ["EXIT_COORDINATOR_LOST", "Link"]

log = logging.getLogger("stageflow.worker")

#: A worker's exit status when it stopped hearing its coordinator.
EXIT_COORDINATOR_LOST = 4
_names = itertools.count()


class Link:
    """Beats to the coordinator from a thread of its own, and watches the coordinator's."""

    def __init__(
        self, settings: dict[str, Any], current: CurrentRecord | None, keys: Keys | None = None
    ) -> None:
        self.key: str = settings["key"]
        self.secret = bytes.fromhex(settings["secret"])
        self.timeout: float = settings["heartbeat_timeout"]
        self.interval = control.heartbeat_interval(self.timeout)
        self.current = current
        self.ctx: zmq.Context[Any] = zmq.Context()
        inproc = f"inproc://stageflow-link-{next(_names)}"
        # One byte on this pair ends the thread.
        self._stop_rx: zmq.Socket[bytes] = self.ctx.socket(zmq.PULL)
        self._stop_rx.bind(inproc)
        self._stop_tx: zmq.Socket[bytes] = self.ctx.socket(zmq.PUSH)
        self._stop_tx.connect(inproc)
        self._dealer: zmq.Socket[bytes] = self.ctx.socket(zmq.DEALER)
        self._sub: zmq.Socket[bytes] = self.ctx.socket(zmq.SUB)
        self._dealer.setsockopt(zmq.IDENTITY, self.key.encode() + control.BEATS)
        self._dealer.setsockopt(zmq.SNDHWM, 0)
        if keys is not None:  # joined from another host: both sockets cross the network
            keys.connect(self._dealer)
            keys.connect(self._sub)
        self._dealer.connect(settings["control"])
        self._sub.setsockopt(zmq.SUBSCRIBE, b"")
        self._sub.connect(settings["heartbeat"])
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start beating (after the hello): from here on the coordinator watches this worker."""
        self._thread = threading.Thread(target=self._run, name="stageflow-link", daemon=True)
        self._thread.start()

    def close(self, deadline: float) -> None:
        """End the thread (waiting until ``deadline``, a monotonic time) and its sockets."""
        self._stop_tx.send(b"")
        if self._thread is not None:
            self._thread.join(max(0.0, deadline - time.monotonic()))
        self._stop_tx.close(linger=0)
        if self._thread is None:
            for sock in (self._stop_rx, self._dealer, self._sub):
                sock.close(linger=0)
        if self._thread is None or not self._thread.is_alive():
            self.ctx.term()

    def _run(self) -> None:
        poller = zmq.Poller()
        for sock in (self._stop_rx, self._sub):
            poller.register(sock, zmq.POLLIN)
        heard = time.monotonic()
        next_beat = heard
        while True:
            wait = max(0.0, next_beat - time.monotonic())
            events = dict(poller.poll(int(wait * 1000) + 1))
            now = time.monotonic()
            if self._stop_rx in events:
                for sock in (self._stop_rx, self._dealer, self._sub):
                    sock.close(linger=0)
                return
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
                self._dealer.send_multipart(wire.encode_control(self._beat(), self.secret))

    def _beat(self) -> dict[str, Any]:
        beat: dict[str, Any] = {"t": "beat", "cur": None}
        inside = self.current.inside() if self.current is not None else None
        if inside is not None:
            root, attempt, started = inside
            beat["cur"] = [root, attempt]
            beat["for"] = round(time.perf_counter() - started, 3)
        return beat
