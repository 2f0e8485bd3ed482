"""The worker process: one stage instance, or a fused group of stages, on its own reactor.

Started by the coordinator as ``python -m stageflow.engine.worker``. The first line on
stdin is the worker's settings (JSON); later lines are commands. stdin reaching end of file
means the coordinator is gone or wants us to stop, so a worker never outlives its pipeline,
even when the coordinator is killed with SIGKILL.

Sockets (all through :mod:`stageflow.transport`):

- ``inbox``: PULL, bound to ``tcp://127.0.0.1:*``; data frames from the upstream stage.
- ``outbox``: PUSH, connected to every worker of the next stage (or to the coordinator's
  results socket after the last stage); flow control pauses the inbox while it is full.
- ``control``: PUSH to the coordinator: ready, wired, acknowledgements, dead letters and
  finish outputs.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time
from collections.abc import Iterator
from typing import Any

from stageflow.engine import shipping, wire
from stageflow.engine.group import build_runner
from stageflow.engine.runner import CurrentRecord, Pending

log = logging.getLogger("stageflow.worker")

#: Flush what a worker produced once this many records are pending, even while busy.
FLUSH_RECORDS = 512
#: ...or once this long (seconds) has passed since the last flush, so a slow stage still
#: streams its results instead of holding back a frame's worth, or a queue of frames.
FLUSH_AFTER = 0.05
#: Seconds a stopping worker may spend handing its last frames to ZeroMQ.
STOP_DEADLINE = 3.0
#: Records processed between two looks at the clock.
_SLICE = 16


class Worker:
    """Wires a stage's or a fused group's runner to its sockets and the coordinator's commands."""

    def __init__(self, settings: dict[str, Any], reactor: Any) -> None:
        from stageflow.transport import (
            ZmqEndpoint,
            ZmqEndpointType,
            ZmqFactory,
            ZmqPullConnection,
            ZmqPushConnection,
        )

        self.key: str = settings["key"]
        self.secret = bytes.fromhex(settings["secret"])
        self.reactor = reactor
        self.settings = settings
        self.runner = build_runner(
            settings["stages"],
            shipping.load_stage_class,
            trusted_input=settings["index"] > 0,
            current=CurrentRecord(settings["current_path"]),
            max_record_size=settings["frame_bytes"],
        )
        self.frame_bytes: int = settings["frame_bytes"]
        self.rejected = wire.Rejections(log, "the inbox")  # the log's prefix names the worker
        self.pending = Pending()
        self._last_flush = time.monotonic()
        self._endpoint = ZmqEndpoint
        self._connect = ZmqEndpointType.connect

        worker = self

        class Inbox(ZmqPullConnection):
            maxMessageSize = settings["max_message_size"]

            def onPull(self, message: list[bytes]) -> None:
                worker.on_frame(message)

        self.factory = ZmqFactory(reactor=reactor)
        self.control = ZmqPushConnection(
            self.factory, ZmqEndpoint(ZmqEndpointType.connect, settings["control"])
        )
        self.outbox = ZmqPushConnection(self.factory)
        self.inbox = Inbox(self.factory, ZmqEndpoint(ZmqEndpointType.bind, settings["bind"]))
        self.outbox.registerProducer(self.inbox, True)  # type: ignore[arg-type]  # Inbox is an IPushProducer via @implementer

    def start(self) -> None:
        self.runner.setup()
        self.send_control({"t": "ready", "pid": os.getpid(), "address": self.inbox.addresses[0]})

    # -- data ------------------------------------------------------------------------------

    def on_frame(self, message: list[bytes]) -> None:
        try:
            ids, records = wire.decode_batch(message, self.secret)
        except wire.WireError as exc:
            self.rejected.add(exc)
            return
        run_batch = self.runner.run_batch
        pending = self.pending
        clock = time.monotonic
        for start in range(0, len(records), _SLICE):
            end = start + _SLICE
            run_batch(ids[start * 3 : end * 3], records[start:end], pending)
            if (
                len(pending.records) >= FLUSH_RECORDS
                or pending.size >= self.frame_bytes
                or clock() - self._last_flush > FLUSH_AFTER
            ):
                self.flush()
        # A frame's outputs leave with it: frames are big when the pipeline is busy and a
        # single record when it is idle, so batching follows the load with no timer.
        self.flush()

    def flush(self) -> None:
        self._last_flush = time.monotonic()
        batch = self.pending.take()
        if batch.records:
            self.outbox.push(wire.encode_batch(batch.ids, batch.records, self.secret))
        if batch.acks or batch.dead:
            # "b": seconds inside process() and the calls per time bucket (stageflow.observe).
            busy = {
                stage: [seconds, [n for pair in batch.times[stage].items() for n in pair]]
                for stage, seconds in batch.busy.items()
            }
            self.send_control(
                {"t": "ack", "dead": batch.dead, "n": batch.processed, "b": busy},
                wire.pack_ints(batch.acks),
            )

    # -- commands --------------------------------------------------------------------------

    def on_command(self, command: dict[str, Any]) -> None:
        kind = command.get("cmd")
        if kind == "wire":
            for address in command.get("drop", ()):
                self.outbox.remove_endpoint(address)
            self.outbox.addEndpoints(
                [self._endpoint(self._connect, address) for address in command.get("add", ())]
            )
            self.send_control({"t": "wired"})
        elif kind == "finish":
            self.flush()
            records, dead = self.runner.finish()
            for chunk in _chunks(records, self.frame_bytes):
                self.send_control({"t": "finish-out"}, b"\n".join(chunk))
            self.send_control({"t": "finished", "dead": dead})
        else:
            log.warning("worker %s ignored unknown command %r", self.key, kind)

    def send_control(self, message: dict[str, Any], payload: bytes = b"") -> None:
        message["w"] = self.key
        self.control.push(wire.encode_control(message, self.secret, payload))

    def stop(self) -> None:
        """Flush, hand everything to ZeroMQ, close the sockets and stop the reactor.

        A dead downstream never takes the buffered frames, so the polite path has a
        deadline; what it could not send is delivered again by the coordinator anyway.
        """
        self.flush()
        self.rejected.flush()
        deferred = self.outbox.flushed()
        deferred.addBoth(lambda _: self.control.flushed())
        deferred.addBoth(lambda _: self.factory.shutdown())
        deferred.addBoth(lambda _: self._halt())
        self.reactor.callLater(STOP_DEADLINE, self._halt)

    def _halt(self) -> None:
        if self.reactor.running:
            self.reactor.stop()


def _commands(worker: Worker, reactor: Any) -> None:
    """Read commands from stdin; end of file stops the worker."""
    from twisted.internet import stdio
    from twisted.protocols.basic import LineOnlyReceiver

    class Commands(LineOnlyReceiver):
        delimiter = b"\n"
        MAX_LENGTH = 1 << 24

        def lineReceived(self, line: bytes) -> None:
            if line.strip():
                worker.on_command(json.loads(line))

        def connectionLost(self, reason: Any = None) -> None:
            worker.stop()

    devnull = os.open(os.devnull, os.O_WRONLY)
    stdio.StandardIO(  # type: ignore[no-untyped-call, call-arg]  # POSIX signature, untyped
        Commands(), stdin=0, stdout=devnull, reactor=reactor
    )


def _chunks(records: list[bytes], budget: int) -> Iterator[list[bytes]]:
    """Consecutive groups of records, each under ``budget`` bytes (or a single record)."""
    chunk: list[bytes] = []
    size = 0
    for record in records:
        if chunk and size + len(record) > budget:
            yield chunk
            chunk, size = [], 0
        chunk.append(record)
        size += len(record) + 1
    if chunk:
        yield chunk


def _die_with_parent(parent: int) -> None:
    """Have the kernel SIGKILL this worker when its parent dies (Linux).

    End of file on stdin already stops an idle worker; this also ends one stuck inside a
    stage's process(), where the reactor never gets to read stdin.
    """
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def _read_first_line(fd: int) -> bytes:
    # Unbuffered on purpose: later lines belong to the reactor's reader of the same fd.
    line = bytearray()
    while not line.endswith(b"\n"):
        chunk = os.read(fd, 1)
        if not chunk:
            break
        line += chunk
    return bytes(line)


def main() -> int:
    # Ctrl-C reaches the whole process group; only the coordinator decides what it means.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    settings = json.loads(_read_first_line(0))
    _die_with_parent(settings["parent_pid"])
    # The caller's import path, so stages from its modules (or its script) import here too.
    sys.path[:0] = [p for p in settings.get("sys_path", ()) if p not in sys.path]
    logging.basicConfig(
        level=settings.get("log_level", logging.INFO),
        format=f"stageflow[{settings['stage']}#{settings['slot']}]: %(message)s",
        stream=sys.stderr,
    )
    from twisted.internet import epollreactor

    epollreactor.install()  # type: ignore[no-untyped-call]
    from twisted.internet import reactor

    try:
        worker = Worker(settings, reactor)
        worker.start()
    except Exception as exc:  # setup failures are reported, then the coordinator decides
        log.error(
            "stage %r could not start: %s: %s",
            settings["stage"],
            type(exc).__name__,
            exc,
            exc_info=settings.get("log_level", logging.INFO) <= logging.DEBUG,
        )
        return 3
    _commands(worker, reactor)
    reactor.run(installSignalHandlers=False)  # type: ignore[misc, call-arg]  # the stub lacks it
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    # Sockets are closed and their linger spent (or the deadline passed): leave without
    # waiting on a ZeroMQ context that a dead peer could keep busy.
    os._exit(0)


if __name__ == "__main__":
    raise SystemExit(main())
