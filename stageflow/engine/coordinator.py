"""The coordinator: starts the workers, wires them, feeds them and watches them.

It runs in the caller's process and thread on plain pyzmq sockets with no Twisted reactor,
so a pipeline can run many times in one process, from a thread, a notebook or an asyncio
program. The reactors live in the worker processes.

The coordinator runs the pipeline's fusion plan (:mod:`stageflow.plan`): each unit, one
stage or a fused group of consecutive stages, has its own workers, and "stage" below means
a unit.

Topology, for units ``0..n-1`` with any number of workers each::

    feed[0] PUSH ──► stage 0 workers ──► stage 1 workers ──► ... ──► results PULL
                        │                    │                           (coordinator)
                        └──── control PUSH ──┴──► control PULL (coordinator)

Every PULL socket is bound to ``tcp://127.0.0.1:*`` and its address read back; the PUSH
side connects to all addresses of the next stage before any record flows, so ZeroMQ's
round-robin spreads records evenly from the first one (no slow-joiner skew).

Reliability: the coordinator keeps every input record until everything it turned into has
been written (:mod:`stageflow.engine.tracker`). When a worker dies it is restarted with
backoff and rewired, and every record still in flight is delivered again under a new
attempt; the first attempt to complete wins and the others are ignored, so results stay
exactly-once. The worker
tells, through a small shared file, which record it was inside ``process()`` for; a record
that was there when ``max_deaths`` workers died is dead-lettered as poison.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

import zmq

from stageflow.engine import shipping, wire
from stageflow.engine.report import RunReport
from stageflow.engine.runner import CurrentRecord, dead_letter
from stageflow.engine.tracker import Root, Tracker
from stageflow.errors import EngineError
from stageflow.observe.latency import LatencyRecorder
from stageflow.observe.snapshot import Progress, StageProgress, WorkerProgress
from stageflow.observe.watch import Watch
from stageflow.pipeline import Pipeline
from stageflow.plan import keeps_state

__all__ = ["WAIT", "Coordinator", "EngineOptions"]

log = logging.getLogger("stageflow.engine")

#: Yielded by an input source that has nothing ready yet (e.g. a slow stdin).
WAIT = object()

_LOOPBACK = "tcp://127.0.0.1:*"
_SUPERVISE_EVERY = 0.05
#: Longest time one feeding round waits on a slow input iterator before results get their
#: turn; keeps latency low when input trickles in.
_FEED_FOR = 0.005


@dataclass
class EngineOptions:
    """Tuning and safety knobs of one run; every field has a safe default."""

    batch_size: int = 256
    max_in_flight: int = 8192
    max_deaths: int = 3
    start_timeout: float = 60.0
    stop_timeout: float = 5.0
    max_start_failures: int = 3
    max_message_size: int = 64 * 1024 * 1024
    bind: str = _LOOPBACK
    log_level: int = logging.INFO
    fuse: bool = True


@dataclass
class _Slot:
    """One worker position (unit, index); its process changes when it is restarted."""

    stage: int  # the index of its plan unit
    index: int
    current_path: str
    generation: int = 0
    proc: subprocess.Popen[bytes] | None = None
    address: str | None = None
    ready: bool = False
    start_failures: int = 0
    consecutive_deaths: int = 0
    started_at: float = 0.0
    restart_at: float | None = None
    finished: bool = False

    @property
    def key(self) -> str:
        return f"{self.stage}.{self.index}.{self.generation}"


@dataclass
class _Rewire:
    """A restarted worker being wired in; replay waits until every peer confirmed."""

    slot: _Slot
    waiting: set[str] = field(default_factory=set)


class Coordinator:
    """Runs one pipeline over one input stream; use :meth:`run` once, then :meth:`close`."""

    def __init__(
        self,
        pipeline: Pipeline,
        report: RunReport,
        options: EngineOptions,
        dead_letter_sink: IO[str] | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.units = pipeline.plan(fuse=options.fuse).units
        self.report = report
        self.options = options
        self.sink = dead_letter_sink
        self._started = time.monotonic()
        self.tracker = Tracker()
        self.secret = wire.new_key()
        self.stopping = False
        self.aborting = False
        self._closed = False
        self._rundir = tempfile.mkdtemp(prefix="stageflow-")
        self._ctx = zmq.Context()
        self._ctx.setsockopt(zmq.LINGER, 0)
        self._control = self._bind(zmq.PULL)
        self._results = self._bind(zmq.PULL)
        self._rejected_results = wire.Rejections(log, "the coordinator's results socket")
        self._rejected_control = wire.Rejections(log, "the coordinator's control socket")
        self._feeds = [self._ctx.socket(zmq.PUSH) for _ in self.units]
        for feed in self._feeds:
            feed.setsockopt(zmq.SNDHWM, 0)  # bounded by max_in_flight instead
        # Frames are kept to half the message limit: the rest is room for ids and head.
        self._frame_bytes = options.max_message_size // 2
        self._backlog: list[deque[list[bytes]]] = [deque() for _ in self.units]
        self._poller = zmq.Poller()
        self._poller.register(self._control, zmq.POLLIN)
        self._poller.register(self._results, zmq.POLLIN)
        self.slots: list[list[_Slot]] = [
            [
                _Slot(s, j, os.path.join(self._rundir, f"current-{s}-{j}"))
                for j in range(unit.workers)
            ]
            for s, unit in enumerate(self.units)
        ]
        self._by_key: dict[str, _Slot] = {}
        self._rewires: list[_Rewire] = []
        self._replay_due = False
        self._finish_stage: int | None = None
        self._next_synthetic = -1
        self._wakeup_fd: int | None = None
        self._last_supervise = 0.0
        # Observation (stageflow.observe): set by the Run before the loop starts.
        self.watch: Watch | None = None
        self.latency: LatencyRecorder | None = None

    # -- sockets and processes ------------------------------------------------------------

    def _bind(self, kind: int) -> zmq.Socket[bytes]:
        sock: zmq.Socket[bytes] = self._ctx.socket(kind)
        sock.setsockopt(zmq.MAXMSGSIZE, self.options.max_message_size)
        sock.bind(self.options.bind)
        return sock

    def _address(self, sock: zmq.Socket[bytes]) -> str:
        return sock.getsockopt_string(zmq.LAST_ENDPOINT)

    def _spawn(self, slot: _Slot) -> None:
        unit = self.units[slot.stage]
        slot.generation += 1
        slot.ready = False
        slot.address = None
        slot.finished = False
        slot.started_at = time.monotonic()
        settings = {
            "key": slot.key,
            "parent_pid": os.getpid(),
            "secret": self.secret.hex(),
            "stage": unit.name,
            "stages": [
                {
                    "stage": stage.name,
                    **shipping.stage_settings(stage.cls),  # "uses", and the class when by value
                    "config": stage.config_json(),
                    "retries": stage.spec.retries,
                    "timeout": stage.spec.timeout,
                }
                for stage in unit.stages
            ],
            "index": slot.stage,
            "slot": slot.index,
            "control": self._address(self._control),
            "bind": self.options.bind,
            "current_path": slot.current_path,
            "max_message_size": self.options.max_message_size,
            "frame_bytes": self._frame_bytes,
            "log_level": self.options.log_level,
            "sys_path": [p for p in sys.path if p and os.path.isdir(p)],
        }
        try:
            stdout: int = sys.__stderr__.fileno() if sys.__stderr__ is not None else -1
        except (AttributeError, OSError, ValueError):
            stdout = -1
        proc = subprocess.Popen(
            [sys.executable, "-m", "stageflow.engine.worker"],
            stdin=subprocess.PIPE,
            stdout=stdout if stdout >= 0 else subprocess.DEVNULL,
            close_fds=True,
        )
        assert proc.stdin is not None
        try:
            proc.stdin.write(json.dumps(settings).encode() + b"\n")
            proc.stdin.flush()
        except OSError:
            pass  # it died at once; supervision sees the exit and handles it like any death
        log.debug("started worker %s#%d (pid %d)", unit.name, slot.index, proc.pid)
        slot.proc = proc
        self._by_key[slot.key] = slot

    def _command(self, slot: _Slot, command: dict[str, Any]) -> bool:
        proc = slot.proc
        if proc is None or proc.stdin is None or proc.poll() is not None:
            return False
        try:
            proc.stdin.write(json.dumps(command).encode() + b"\n")
            proc.stdin.flush()
        except (BrokenPipeError, OSError):
            return False
        return True

    def _downstream(self, stage: int) -> list[str]:
        if stage + 1 == len(self.slots):
            return [self._address(self._results)]
        return [s.address for s in self.slots[stage + 1] if s.ready and s.address]

    # -- start ----------------------------------------------------------------------------

    def start(self) -> None:
        """Start every worker, wait until all are ready, then wire them together."""
        all_slots = [slot for stage_slots in self.slots for slot in stage_slots]
        for slot in all_slots:
            self._spawn(slot)
        deadline = time.monotonic() + self.options.start_timeout
        while not all(slot.ready for slot in all_slots):
            self._check_deadline(deadline)
            self._receive_control(0.05)
            for slot in all_slots:
                if slot.proc is not None and not slot.ready and slot.proc.poll() is not None:
                    self._start_failed(slot)
                    _close_stdin(slot.proc)
                    self._spawn(slot)
        for s, stage_slots in enumerate(self.slots):
            for slot in stage_slots:
                self._feeds[s].connect(slot.address or "")
            for slot in stage_slots:
                self._command(slot, {"cmd": "wire", "add": self._downstream(s)})
        # Records flow only once every PUSH socket is connected to all of its peers.
        waiting = {slot.key for slot in all_slots}
        while waiting:
            self._check_deadline(deadline)
            for message in self._receive_control(0.05):
                if message["t"] == "wired":
                    waiting.discard(message["w"])
            self._supervise()
            live = {slot.key for slot in all_slots if slot.proc is not None}
            waiting &= live

    def _check_deadline(self, deadline: float) -> None:
        if time.monotonic() > deadline:
            raise EngineError(
                f"workers did not start within {self.options.start_timeout:.0f}s; "
                "check the stages' setup() and the machine's load"
            )

    def _start_failed(self, slot: _Slot) -> None:
        assert slot.proc is not None
        slot.start_failures += 1
        limit = self.options.max_start_failures
        if slot.proc.returncode is not None and slot.proc.returncode < 0:
            # Killed by a signal while starting: maybe from outside (an operator, the OOM
            # killer), so allow more tries than for an error of the stage's own.
            limit *= 3
        if slot.start_failures >= limit:
            code = slot.proc.returncode
            # A worker killed by a signal printed nothing: there is no error above to point at.
            why = (
                f"it was killed by {signal.Signals(-code).name}"
                if code is not None and code < 0 and -code in signal.valid_signals()
                else f"last exit status {code}; see its error above"
            )
            raise EngineError(
                f"the worker of stage {self.units[slot.stage].name!r} failed to "
                f"start {slot.start_failures} times ({why})"
            )

    # -- the loop -------------------------------------------------------------------------

    def run(
        self,
        source: Iterator[Any],
        wakeup_fd: int | None = None,
        on_idle: Callable[[], None] | None = None,
    ) -> Iterator[bytes]:
        """Feed ``source`` (``(seq, record_bytes)`` pairs or WAIT) and yield result lines.

        ``wakeup_fd`` becomes readable when a source that said WAIT has more (see
        :class:`stageflow.engine.run.ReadAhead`); ``on_idle`` is called before the loop
        waits, after it yielded results (the CLI flushes its output there).
        """
        for _seq, results in self.completions(source, wakeup_fd, on_idle):
            yield from results

    def completions(
        self,
        source: Iterator[Any],
        wakeup_fd: int | None = None,
        on_idle: Callable[[], None] | None = None,
    ) -> Iterator[tuple[int, list[bytes]]]:
        """Like :meth:`run`, but yield ``(seq, result lines)`` once per completed record.

        The record's dead letters are in the dead-letter sink before it is yielded, so a
        caller that journals its output knows what each file holds (``seq`` is not positive
        for what ``finish()`` emitted).
        """
        exhausted = False
        started = self._started
        if wakeup_fd is not None:
            self._poller.register(wakeup_fd, zmq.POLLIN)
        self._wakeup_fd = wakeup_fd
        yielded = False
        while True:
            more_input = False
            if not exhausted and not self.stopping:
                exhausted, more_input = self._feed(source)
            idle = (exhausted or self.stopping) and not self.tracker.roots
            settled = idle and not self._rewires and not self._restarts_pending()
            if settled and not self._advance_finish():
                break
            self._flush_backlogs()
            busy = more_input or self.tracker.completed
            if not busy and yielded and on_idle is not None:
                on_idle()
                yielded = False
            self._poll(0.0 if busy else 0.02)
            self._supervise()
            if self.watch is not None:
                self.watch.tick()
            for root in self.tracker.take_completed():
                yielded = True
                yield root.seq, self._emit(root)
            self.report.seconds = time.monotonic() - started
        if wakeup_fd is not None:
            self._poller.unregister(wakeup_fd)
            self._wakeup_fd = None
        self.report.finished = exhausted and not self.stopping
        self.report.interrupted = self.stopping
        self.report.seconds = time.monotonic() - started

    def _feed(self, source: Iterator[Any]) -> tuple[bool, bool]:
        """Send what the in-flight window allows.

        Returns (exhausted, more): whether the source has ended, and whether it may have
        more ready right now (so the loop should not wait).
        """
        credit = self.options.max_in_flight - len(self.tracker.roots)
        stage0 = self.slots[0]
        chunk = min(credit, self.options.batch_size * len(stage0))
        if chunk <= 0:
            return False, False
        taken: list[Root] = []
        exhausted = False
        more = True
        clock = time.monotonic
        until = clock() + _FEED_FOR
        for _ in range(chunk):
            try:
                item = next(source)
            except StopIteration:
                exhausted = True
                break
            if item is WAIT:
                more = False
                break
            seq, record = item
            root = self.tracker.add(seq, record, 0)
            self.report.records_in += 1
            self.report.last_line_read = seq
            if len(record) > self._frame_bytes:
                self.tracker.give_up(
                    root,
                    dead_letter(
                        seq,
                        self.pipeline.stages[0].name,
                        "RecordTooLarge",
                        f"the record is {len(record)} bytes, more than the "
                        f"{self._frame_bytes}-byte limit of one frame; raise max_message_size",
                        record,
                    ),
                )
            else:
                taken.append(root)
            if clock() > until:
                break
        if taken:
            self._send_roots(0, taken)
            if self.latency is not None:
                self.latency.read(taken)
        return exhausted, more and not exhausted and len(taken) < credit

    def _send_roots(self, stage: int, roots: list[Root]) -> None:
        # Split evenly over the stage's workers so round-robin gives each a fair share,
        # and into frames under the byte limit.
        parts = max(1, min(len(self.slots[stage]), len(roots)))
        size = -(-len(roots) // parts)
        budget = self._frame_bytes
        for start in range(0, len(roots), size):
            ids: list[int] = []
            records: list[bytes] = []
            used = 0
            for root in roots[start : start + size]:
                if records and used + len(root.record) > budget:
                    self._send(stage, wire.encode_batch(ids, records, self.secret))
                    ids, records, used = [], [], 0
                ids += (root.seq, root.attempt, root.tag)
                records.append(root.record)
                used += len(root.record) + 1
            self._send(stage, wire.encode_batch(ids, records, self.secret))

    def _send(self, stage: int, parts: list[bytes]) -> None:
        # Never block: a stage whose workers are all being restarted has no peer to take
        # the frame, and the loop must go on to restart them.
        backlog = self._backlog[stage]
        if not backlog:
            try:
                self._feeds[stage].send_multipart(parts, zmq.NOBLOCK)
                return
            except zmq.Again:
                pass
        backlog.append(parts)

    def _flush_backlogs(self) -> None:
        for stage, backlog in enumerate(self._backlog):
            feed = self._feeds[stage]
            while backlog:
                try:
                    feed.send_multipart(backlog[0], zmq.NOBLOCK)
                except zmq.Again:
                    break
                backlog.popleft()

    def _poll(self, timeout: float) -> None:
        events = dict(self._poller.poll(int(timeout * 1000)))
        if self._wakeup_fd is not None and self._wakeup_fd in events:
            with contextlib.suppress(BlockingIOError):
                os.read(self._wakeup_fd, 65536)
        if self._results in events:
            self._receive_results()
        if self._control in events:
            self._receive_control(0)

    def _drain(self, sock: zmq.Socket[bytes]) -> Iterator[list[bytes]]:
        """What ``sock`` holds now, a bounded number of messages, without waiting."""
        for _ in range(1000):
            try:
                yield sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return

    def _receive_results(self) -> None:
        for parts in self._drain(self._results):
            try:
                ids, records = wire.decode_batch(parts, self.secret)
            except wire.WireError as exc:
                self._rejected_results.add(exc)
                continue
            self.tracker.results(ids, records)

    def _receive_control(self, timeout: float) -> list[dict[str, Any]]:
        """Handle what the workers said, waiting up to ``timeout``; return the messages."""
        if timeout and not self._control.poll(int(timeout * 1000)):
            return []
        handled = []
        for parts in self._drain(self._control):
            try:
                message, body = wire.decode_control(parts, self.secret)
            except wire.WireError as exc:
                self._rejected_control.add(exc)
                continue
            self._on_control(message, body)
            handled.append(message)
        return handled

    def _on_control(self, message: dict[str, Any], body: bytes) -> None:
        kind = message["t"]
        slot = self._by_key.get(message.get("w", ""))
        if kind == "ack":
            for seq, attempt, entry in message.get("dead", ()):
                self.tracker.dead(seq, attempt, entry)
            try:
                self.tracker.ack(wire.unpack_ints(body))
            except wire.WireError as exc:
                log.warning("dropped malformed acknowledgements: %s", exc)
            if slot is not None:
                # Counted per stage even inside a fused group, as if it were not fused.
                busy = message.get("b") or {}
                for name, count in message.get("n", {}).items():
                    worker = f"{name}#{slot.index}"
                    self.report.add_ack(name, worker, count, busy.get(name))
        elif slot is None or slot.key != message.get("w"):
            return
        elif kind == "ready":
            slot.ready = True
            slot.address = message["address"]
            slot.start_failures = 0
            for rewire in self._rewires:
                if rewire.slot is slot:
                    self._wire_in(rewire)
        elif kind == "wired":
            for rewire in self._rewires:
                rewire.waiting.discard(slot.key)
            self._rewires = [r for r in self._rewires if r.waiting or not r.slot.ready]
            if not self._rewires and self._replay_due:
                self._replay()
        elif kind == "finish-out":
            self._inject(slot.stage + 1, body.split(b"\n"))
        elif kind == "finished":
            slot.finished = True
            for entry in message.get("dead", ()):
                self._dead_letter(entry)

    # -- end of stream --------------------------------------------------------------------

    def _advance_finish(self) -> bool:
        """Drive finish() stage by stage; return False once every stage has finished."""
        if self._finish_stage is None:
            self._finish_stage = 0
            self._start_finish(0)
            return True
        stage_slots = self.slots[self._finish_stage]
        if not all(slot.finished for slot in stage_slots):
            return True
        self._finish_stage += 1
        if self._finish_stage == len(self.slots):
            return False
        self._start_finish(self._finish_stage)
        return True

    def _start_finish(self, stage: int) -> None:
        for slot in self.slots[stage]:
            if slot.ready:
                self._command(slot, {"cmd": "finish"})

    def _inject(self, stage: int, records: list[bytes]) -> None:
        """Outputs of a stage's finish() enter the next stage as new roots."""
        if stage == len(self.slots):
            for record in records:
                root = Root(0, record, stage, 0)
                root.results = [record]
                self.tracker.completed.append(root)
            return
        roots = []
        for record in records:
            roots.append(self.tracker.add(self._next_synthetic, record, stage))
            self._next_synthetic -= 1
        self._send_roots(stage, roots)

    def _emit(self, root: Root) -> list[bytes]:
        if self.latency is not None:
            self.latency.done(root)
        if root.dead:
            for entry in root.dead:
                self._dead_letter(entry)
        if root.seq > 0:
            self.report.records_done += 1
        if not root.results:
            return []
        self.report.results += len(root.results)
        return root.results

    def _dead_letter(self, entry: dict[str, Any]) -> None:
        self.report.add_dead_letter(entry)
        if self.sink is not None:
            self.sink.write(json.dumps(entry, default=str) + "\n")
            return  # the file has it; the summary counts it
        where = f"line {entry['line']}" if entry.get("line") else "end of stream"
        log.warning(
            "dead-lettered (%s, stage %s): %s: %s",
            where,
            entry.get("stage"),
            entry.get("error"),
            entry.get("message"),
        )

    # -- supervision ----------------------------------------------------------------------

    def _restarts_pending(self) -> bool:
        return any(
            slot.restart_at is not None or not slot.ready
            for stage_slots in self.slots
            for slot in stage_slots
        )

    def _supervise(self) -> None:
        now = time.monotonic()
        if now - self._last_supervise < _SUPERVISE_EVERY:
            return
        self._last_supervise = now
        for stage_slots in self.slots:
            for slot in stage_slots:
                if slot.restart_at is not None:
                    if now >= slot.restart_at:
                        slot.restart_at = None
                        self._spawn(slot)
                    continue
                if slot.proc is None:
                    continue
                if slot.proc.poll() is not None:
                    self._on_death(slot, now)
                elif not slot.ready and now - slot.started_at > self.options.start_timeout:
                    log.warning(
                        "worker %s#%d did not become ready within %.0fs; killing it",
                        self.units[slot.stage].name,
                        slot.index,
                        self.options.start_timeout,
                    )
                    slot.proc.kill()  # its death is handled, and counted, on the next round

    def _on_death(self, slot: _Slot, now: float) -> None:
        assert slot.proc is not None
        code = slot.proc.returncode
        unit = self.units[slot.stage]
        name = unit.name
        old_address = slot.address
        if not slot.ready:
            self._start_failed(slot)
        if now - slot.started_at > 5.0:
            slot.consecutive_deaths = 0
        slot.consecutive_deaths += 1
        delay = min(0.05 * 2 ** (slot.consecutive_deaths - 1), 2.0)
        self.report.add_restart(*(stage.name for stage in unit.stages))
        log.warning(
            "worker %s#%d (pid %d) exited with status %s; restarting it in %.2fs",
            name,
            slot.index,
            slot.proc.pid,
            code,
            delay,
        )
        self._blame(slot, code)
        if any(keeps_state(stage.cls) for stage in unit.stages):
            log.warning(
                "stage %s keeps state: the dead worker's state is lost, and records in flight "
                "are delivered again, so its finish() outputs may be incomplete or count some "
                "records twice",
                name,
            )
        _close_stdin(slot.proc)
        slot.proc = None
        slot.ready = False
        slot.restart_at = now + delay
        if old_address:
            # Stop routing records into the dead worker's pipes at once; what they held is
            # delivered again once the replacement is wired in.
            # ZMQError: it was never connected, the worker died before the wiring.
            with contextlib.suppress(zmq.ZMQError):
                self._feeds[slot.stage].disconnect(old_address)
            if slot.stage > 0:
                for upstream in self.slots[slot.stage - 1]:
                    if upstream.ready:
                        self._command(upstream, {"cmd": "wire", "drop": [old_address]})
        for rewire in self._rewires:
            rewire.waiting.discard(slot.key)
        self._rewires = [r for r in self._rewires if r.slot is not slot]
        self._rewires.append(_Rewire(slot))
        self._replay_due = True
        if self._finish_stage == slot.stage:
            slot.finished = False

    def _blame(self, slot: _Slot, code: int | None) -> None:
        current = CurrentRecord.read(slot.current_path)
        # Cleared now, so a replacement that dies before it opens the file blames nobody.
        with contextlib.suppress(OSError):
            os.unlink(slot.current_path)
        if current is None:
            return
        seq, attempt, member = current
        root = self.tracker.roots.get(seq)
        if root is None or not root.live_attempt(attempt):
            return
        root.deaths += 1
        if root.deaths >= self.options.max_deaths:
            stages = self.units[slot.stage].stages
            stage = stages[min(member, len(stages) - 1)].name
            self.tracker.give_up(
                root,
                dead_letter(
                    seq,
                    stage,
                    "PoisonRecord",
                    f"{root.deaths} workers died while processing this record "
                    f"(last exit status {code}); it was set aside",
                    root.record,
                ),
            )

    def _wire_in(self, rewire: _Rewire) -> None:
        """Connect a restarted worker to its upstream and downstream peers."""
        slot = rewire.slot
        stage = slot.stage
        self._feeds[stage].connect(slot.address or "")
        if stage > 0:
            for upstream in self.slots[stage - 1]:
                command = {"cmd": "wire", "add": [slot.address]}
                if upstream.ready and self._command(upstream, command):
                    rewire.waiting.add(upstream.key)
        if self._command(slot, {"cmd": "wire", "add": self._downstream(stage)}):
            rewire.waiting.add(slot.key)
        if self._finish_stage == stage:
            self._command(slot, {"cmd": "finish"})

    def _replay(self) -> None:
        """Deliver again every record still in flight, under a new attempt."""
        self._replay_due = False
        by_stage: dict[int, list[Root]] = {}
        for root in self.tracker.roots.values():
            self.tracker.redeliver(root)
            by_stage.setdefault(root.stage, []).append(root)
        for stage, roots in sorted(by_stage.items()):
            log.info("redelivering %d records in flight to stage %s", len(roots), stage)
            self.report.redeliveries += len(roots)
            for start in range(0, len(roots), self.options.batch_size):
                self._send_roots(stage, roots[start : start + self.options.batch_size])

    # -- observation: the one method stageflow.observe reads the engine through ------------

    def progress(self) -> Progress:
        """A snapshot of the run so far (see :mod:`stageflow.observe.snapshot`)."""
        report = self.report
        stages = []
        # A fused group's processes host each of its stages, so each stage lists them all.
        for s, (unit, stage_slots) in enumerate(zip(self.units, self.slots, strict=True)):
            currents = [CurrentRecord.read(slot.current_path) for slot in stage_slots]
            for member, stage in enumerate(unit.stages):
                name = stage.name
                workers = []
                for slot, current in zip(stage_slots, currents, strict=True):
                    key = f"{name}#{slot.index}"
                    inside = current is not None and current[2] == member
                    workers.append(
                        WorkerProgress(
                            name=key,
                            pid=slot.proc.pid if slot.proc is not None else None,
                            ready=slot.ready,
                            processed=report.per_worker.get(key, 0),
                            busy_seconds=report.worker_busy.get(key, 0.0),
                            current_line=max(current[0], 0) if current and inside else None,
                        )
                    )
                stages.append(
                    StageProgress(
                        name=name,
                        workers=tuple(workers),
                        processed=report.processed.get(name, 0),
                        busy_seconds=report.busy.get(name, 0.0),
                        queued_frames=len(self._backlog[s]),
                        restarts=report.restarts.get(name, 0),
                        dead_letters=sum(report.dead_by_stage.get(name, {}).values()),
                    )
                )
        return Progress(
            pipeline=report.pipeline,
            elapsed=time.monotonic() - self._started,
            records_in=report.records_in,
            records_done=report.records_done,
            results=report.results,
            dead_lettered=report.dead_lettered,
            in_flight=len(self.tracker.roots),
            worker_restarts=report.worker_restarts,
            redeliveries=report.redeliveries,
            stages=tuple(stages),
            dead_letters=tuple(
                (stage, error, count)
                for stage, errors in report.dead_by_stage.items()
                for error, count in errors.items()
            ),
            latency=tuple(sorted(report.latency.items())),
            latency_seconds=report.latency_seconds,
        )

    # -- stop -----------------------------------------------------------------------------

    def close(self) -> None:
        """Stop every worker (politely, then by force) and release sockets and files."""
        if self._closed:
            return
        self._closed = True
        procs = [
            slot.proc for stage_slots in self.slots for slot in stage_slots if slot.proc is not None
        ]
        try:
            if not self.aborting:
                for proc in procs:
                    _close_stdin(proc)
                deadline = time.monotonic() + self.options.stop_timeout
                for proc in procs:
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        proc.wait(max(0.0, deadline - time.monotonic()))
        finally:
            # Whatever happened above (even a second Ctrl-C), no worker outlives the run.
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                _close_stdin(proc)
            for proc in procs:
                log.debug("worker pid %d exited with status %s", proc.pid, proc.wait())
            self._rejected_results.flush()
            self._rejected_control.flush()
            for sock in (self._control, self._results, *self._feeds):
                sock.close(linger=0)
            self._ctx.term()
            shutil.rmtree(self._rundir, ignore_errors=True)


def _close_stdin(proc: subprocess.Popen[bytes]) -> None:
    """Close our end of a worker's command pipe; for a live worker that means "stop"."""
    if proc.stdin is not None:
        # OSError: the worker is gone and the last command could not be flushed.
        with contextlib.suppress(OSError):
            proc.stdin.close()
