"""The worker process: one stage instance, or a fused group of stages, on its own reactor.

A launcher (:mod:`stageflow.engine.launcher`) starts a process that calls
:func:`run_worker` with the worker's settings, a JSON-able dict the coordinator made. The
worker then needs nothing else from its parent: it registers on the control plane
(:mod:`stageflow.engine.control`), takes data frames on its own PULL socket and reports back
on the control plane.

Sockets, all but the link's on the reactor thread:

- ``inbox``: PULL (:mod:`stageflow.transport`), bound to ``tcp://127.0.0.1:*``. The
  coordinator sends it at most its credit of frames, each ``[frame id, frame...]``.
- ``control``: DEALER connected to the coordinator's ROUTER: the hello, then every report
  (progress with the outputs, snapshots, finish), in the order they are made; the
  coordinator's commands come back on it.
- the link's beat DEALER and SUB, owned by the link thread (:mod:`stageflow.engine.link`).
"""

from __future__ import annotations

import base64
import gc
import logging
import os
import socket
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any

from pydantic import BaseModel

from stageflow.engine import control, shipping, wire
from stageflow.engine.group import GroupRunner, build_runner
from stageflow.engine.link import Link
from stageflow.engine.runner import TABLE_ROOTS, CurrentRecord, Pending, StageRunner
from stageflow.security import Gatekeeper, Keys
from stageflow.stage import Stage

__all__ = ["make_runner", "run_worker"]

log = logging.getLogger("stageflow.worker")

#: Report progress on a frame once this many records are pending, even mid-frame: enough
#: that a 256-record frame fanning out two or three times goes in one report, not two.
FLUSH_RECORDS = 1024
#: ...or once this long (seconds) has passed since the last report, so a slow stage still
#: streams its results instead of holding back a frame's worth.
FLUSH_AFTER = 0.05
#: Seconds a stopping worker may spend handing its last messages to ZeroMQ.
STOP_DEADLINE = 3.0
#: Milliseconds the control socket keeps delivering once closed (its last reports).
_CONTROL_LINGER = 1000
#: Records processed between two looks at the clock, at first (:class:`Slices`).
_SLICE = 16
#: The collector's first threshold in a worker once its stage is set up (stdlib default 700).
WORKER_GC_THRESHOLD = 100_000
#: Exit status of a worker whose stage could not be imported or set up.
EXIT_SETUP_FAILED = 3


def make_runner(
    settings: dict[str, Any], current: CurrentRecord | None
) -> StageRunner | GroupRunner:
    """The runner a worker hosts: what turns its frames into outputs (setup/run_batch/finish),
    for one stage or a fused group of them (``settings["stages"]``)."""
    return build_runner(
        settings["stages"],
        shipping.load_stage_class,
        trusted_input=settings["index"] > 0,
        current=current,
        max_record_size=settings["frame_bytes"],
        final=settings.get("final", False),
    )


class Slices:
    """How many records a worker hands its runner at once: about ``seconds``' worth.

    A slice's bookkeeping (the current-record file's ids, each stage's loop set up, the
    hand-offs) is then spread over many records when they are fast, while a slow stage is
    still looked at often enough to report every FLUSH_AFTER. The size doubles after a slice
    that took under half the aim and halves after one that took over twice it, from
    ``size`` up to ``most`` (what the current-record file holds at once) and down to one.
    """

    def __init__(self, size: int = _SLICE, seconds: float = 0.005, most: int = TABLE_ROOTS):
        self.size = size
        self.seconds = seconds
        self.most = most

    def took(self, seconds: float) -> None:
        """The last slice took ``seconds``: size the next one."""
        if seconds < self.seconds / 2 and self.size < self.most:
            self.size = min(self.size * 2, self.most)
        elif seconds > self.seconds * 2 and self.size > 1:
            self.size //= 2


class Worker:
    """Wires a stage's or a fused group's runner to its inbox and the coordinator's commands."""

    def __init__(self, settings: dict[str, Any], reactor: Any, keys: Keys | None = None) -> None:
        from stageflow.transport import (
            ZmqDealerConnection,
            ZmqEndpoint,
            ZmqEndpointType,
            ZmqFactory,
            ZmqPullConnection,
        )

        self.key: str = settings["key"]
        self.secret = bytes.fromhex(settings["secret"])
        self.reactor = reactor
        self.settings = settings
        self.current = (
            CurrentRecord(settings["current_path"]) if settings.get("current_path") else None
        )
        self.link = Link(settings, self.current, keys)
        self.runner: StageRunner | GroupRunner
        self.frame_bytes: int = settings["frame_bytes"]
        self.batch_size: int = settings["batch_size"]
        self.rejected = wire.Rejections(log, "the inbox")  # the log's prefix names the worker
        self.pending = Pending()
        self._last_flush = time.monotonic()
        self.slices = Slices()
        # A stateful stage with hooks snapshots itself after this many records or seconds.
        self.snapshots: bool = settings.get("snapshots", False)
        self._snapshot_every: int = settings.get("snapshot_every", 0)
        self._snapshot_seconds: float = settings.get("snapshot_seconds", 0.0)
        self._unsnapped = 0
        self._snapped_at = time.monotonic()

        worker = self

        class Inbox(ZmqPullConnection):
            maxMessageSize = settings["max_message_size"]

            def _configure_socket(self) -> None:
                super()._configure_socket()
                if keys is not None:  # on another host: a CURVE server admitting the coordinator
                    keys.serve(self.socket)

            def onPull(self, message: list[bytes]) -> None:
                worker.on_frame(message)

        class Control(ZmqDealerConnection):
            maxMessageSize = settings["max_message_size"]
            highWaterMark = 0  # what is sent is bounded by credit instead
            linger = _CONTROL_LINGER

            def _configure_socket(self) -> None:
                super()._configure_socket()
                if keys is not None:  # joined from another host: CURVE to the coordinator
                    keys.connect(self.socket)

            def gotMessage(self, *frames: bytes) -> None:
                worker.on_control(list(frames))

        self.factory = ZmqFactory(reactor=reactor)
        self.gate = Gatekeeper(self.factory.context, keys) if keys is not None else None
        self.inbox = Inbox(self.factory, ZmqEndpoint(ZmqEndpointType.bind, settings["bind"]))
        self.control = Control(
            self.factory,
            ZmqEndpoint(ZmqEndpointType.connect, settings["control"]),
            identity=self.key.encode(),
        )
        info = {
            "key": self.key,
            "stage": settings["stage"],
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "address": self.inbox.addresses[0],
            "wire": wire.VERSION,
        }
        # Registered first, then beating: from here on the coordinator watches this worker.
        self.control.send(control.encode_hello(info, self.secret))
        self.link.start()

    def send(
        self, message: dict[str, Any], payload: bytes = b"", frames: Sequence[list[bytes]] = ()
    ) -> None:
        """Send the coordinator a control message, and data frames after it."""
        parts = wire.encode_control(message, self.secret, payload)
        for frame in frames:
            parts += frame
        self.control.send(parts)

    def load(self) -> None:
        """Import the stage and run its setup(); what raises here is the stage's problem."""
        self.runner = make_runner(self.settings, self.current)
        self.runner.setup()

    # -- data ------------------------------------------------------------------------------

    def on_frame(self, message: list[bytes]) -> None:
        if len(message) != 4 or len(message[0]) != 8:
            self.rejected.add(wire.WireError("a frame without its 8-byte frame id in front"))
            return
        frame = int.from_bytes(message[0], "little")
        try:
            ids, records = wire.decode_batch(message[1:], self.secret)
        except wire.WireError as exc:
            self.rejected.add(exc)
            return
        run_batch = self.runner.run_batch
        pending = self.pending
        clock = time.monotonic
        slices = self.slices
        start = 0
        began = clock()
        while start < len(records):
            end = start + slices.size
            run_batch(ids[start * 3 : end * 3], records[start:end], pending)
            start = end
            now = clock()
            slices.took(now - began)
            began = now
            if end < len(records) and (
                len(pending.records) >= FLUSH_RECORDS
                or pending.size >= self.frame_bytes
                or now - self._last_flush > FLUSH_AFTER
            ):
                self.flush(frame, end=False)
                began = clock()
        # A frame's outputs leave with it: frames are big when the pipeline is busy and a
        # single record when it is idle, so batching follows the load with no timer.
        self.flush(frame, end=True)
        if self.snapshots:
            self._unsnapped += len(records)
            if (
                self._unsnapped >= self._snapshot_every
                or clock() - self._snapped_at >= self._snapshot_seconds
            ):
                self.snap()

    def snap(self) -> None:
        """Send the stage's state; it covers exactly the records reported before it."""
        state = self._stateful().snapshot()
        if isinstance(state, BaseModel):
            state = state.model_dump_json().encode()
        self.send({"t": "snap"}, state)
        self._unsnapped = 0
        self._snapped_at = time.monotonic()

    def _stateful(self) -> Stage:
        """The stage of a stateful worker: never fused, so the runner hosts it alone."""
        assert isinstance(self.runner, StageRunner)
        return self.runner.stage

    def flush(self, frame: int, end: bool) -> None:
        self._last_flush = time.monotonic()
        self.runner.account(self.pending)  # the time in process(), once per report
        batch = self.pending.take()
        frames = [
            wire.encode_batch(ids, records, self.secret)
            for ids, records in _frames(
                batch.ids, batch.records, self.batch_size, self.frame_bytes, batch.size
            )
        ]
        # Per stage: "n" records taken in, "b" seconds inside process() and the calls per
        # time bucket (stageflow.observe).
        busy = {
            stage: [seconds, [n for pair in batch.times[stage].items() for n in pair]]
            for stage, seconds in batch.busy.items()
        }
        message = {
            "t": "done",
            "f": frame,
            "end": end,
            "n": batch.processed,
            "dead": batch.dead,
            "b": busy,
        }
        self.send(message, wire.pack_ints(batch.acks), frames)

    # -- commands --------------------------------------------------------------------------

    def on_control(self, parts: list[bytes]) -> None:
        try:
            command, _ = wire.decode_control(parts, self.secret)
        except wire.WireError as exc:
            log.warning("worker %s dropped a malformed command: %s", self.key, exc)
            return
        self.on_command(command)

    def on_command(self, command: dict[str, Any]) -> None:
        kind = command.get("t")
        if kind == "snap":
            self.snap()
            return
        if kind == "restore":
            self._stateful().restore(base64.b64decode(command["state"]))
            self.send({"t": "restored"})
            return
        if kind in ("finish", "retire"):
            records, dead = self.runner.finish()
            for chunk in _chunks(records, self.frame_bytes):
                self.send({"t": "finish-out"}, b"\n".join(chunk))
            self.send({"t": "finished", "dead": dead})
        if kind in ("retire", "stop"):
            self.stop()
        elif kind != "finish":
            log.warning("worker %s ignored unknown command %r", self.key, kind)

    def stop(self) -> None:
        """Close the sockets (the control one sends what is queued first); stop the reactor."""
        if self.gate is not None:
            self.gate.close()  # before the context ends: its sockets would hold that up
        self.rejected.flush()
        self.factory.shutdown()
        if self.reactor.running:
            self.reactor.stop()


def _frames(
    ids: list[int], records: list[bytes], most: int, budget: int, size: int
) -> Iterator[tuple[list[int], list[bytes]]]:
    """Split outputs into frames of at most ``most`` records and about ``budget`` bytes.

    ``size`` is at least the records' bytes: when they all fit, they are cut by count alone.
    """
    if size + len(records) <= budget:
        for start in range(0, len(records), most):
            yield ids[start * 3 : (start + most) * 3], records[start : start + most]
        return
    start = 0
    while start < len(records):
        end = start
        size = 0
        while end < len(records) and end - start < most:
            size += len(records[end]) + 1
            if end > start and size > budget:
                break
            end += 1
        yield ids[start * 3 : end * 3], records[start:end]
        start = end


def _chunks(records: Sequence[bytes], budget: int) -> Iterator[list[bytes]]:
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


def _lower_priority(increment: int) -> None:
    """Run ``increment`` nicer than the fork server (EngineOptions.upstream_nice)."""
    if increment > 0:
        try:
            os.nice(increment)
        except OSError as exc:  # a sandbox may forbid it; the run is only less well shared
            log.debug("worker kept its priority: %s", exc)


def run_worker(settings: dict[str, Any], keys: Keys | None = None) -> int:
    """Run one worker until the coordinator stops it; return the process's exit status.

    ``keys`` are a joined worker's (:mod:`stageflow.engine.join`): its sockets use CURVE.
    """
    logging.basicConfig(
        level=settings.get("log_level", logging.INFO),
        format=f"stageflow[{settings['stage']}#{settings['slot']}]: %(message)s",
        stream=sys.stderr,
        force=True,
    )
    if "twisted.internet.reactor" not in sys.modules:
        from twisted.internet import epollreactor

        epollreactor.install()  # type: ignore[no-untyped-call]
    from twisted.internet import reactor

    _lower_priority(settings.get("nice", 0))
    worker = Worker(settings, reactor, keys)
    try:
        worker.load()
    except Exception as exc:  # setup failures are reported, then the coordinator decides
        error = f"{type(exc).__name__}: {exc}"
        log.error(
            "stage %r could not start: %s",
            settings["stage"],
            error,
            exc_info=settings.get("log_level", logging.INFO) <= logging.DEBUG,
        )
        worker.send({"t": "failed", "error": error})
        worker.stop()
        worker.link.close(time.monotonic() + STOP_DEADLINE)
        return EXIT_SETUP_FAILED
    # What the stage's setup() made lives as long as the worker: out of every collection from
    # here on. A slice's records, a few objects each at every stage, are young and alive when
    # the youngest generation is collected every 700 allocations, so each pass walked them to
    # free nothing; this process is the engine's, so it collects rarely instead, as the CLI's
    # does (callgrind, fused text path: 1.1% fewer instructions per document).
    gc.freeze()
    gc.set_threshold(WORKER_GC_THRESHOLD, *gc.get_threshold()[1:])
    worker.send({"t": "ready"})
    reactor.run(installSignalHandlers=False)  # type: ignore[misc, call-arg]  # the stub lacks it
    worker.link.close(time.monotonic() + STOP_DEADLINE)
    logging.shutdown()
    return 0
