"""The coordinator's loop: feed input, route what the workers say, hand out results.

It runs in the caller's process and thread on plain pyzmq sockets with no Twisted reactor,
so a pipeline can run many times in one process, from a thread, a notebook or an asyncio
program. The reactors live in the worker processes. Its parts, in the order data flows
through them:

- :mod:`~stageflow.engine.pool` starts workers through a launcher and replaces lost ones;
- :mod:`~stageflow.engine.membership` registers them and declares them lost;
- :mod:`~stageflow.engine.dispatch` sends frames against credit and knows who holds what;
- :mod:`~stageflow.engine.keying` and :mod:`~stageflow.engine.admission` decide where a
  record may enter a keyed or a stateful stage;
- :mod:`~stageflow.engine.tracker` follows each input record until it is wholly done;
- :mod:`~stageflow.engine.finishing` runs ``finish()`` stage by stage at the end.

Topology::

    coordinator PUSH (one per worker) ──frames──► worker PULL
    worker DEALER ──hello, beats, progress with outputs, finish outputs──► coordinator ROUTER
    coordinator ROUTER ──commands──► worker DEALER;  coordinator PUB ──beats──► worker SUB

Every frame between two stages passes through the coordinator, which forwards it unparsed
to a worker of the next stage that has credit: so it always knows exactly which records each
worker holds, and a lost worker costs only what it held.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, Any

import zmq

from stageflow.engine import control, wire
from stageflow.engine.admission import Admission
from stageflow.engine.dispatch import Dispatch
from stageflow.engine.finishing import Finishing
from stageflow.engine.keying import check_scalable, slot_of
from stageflow.engine.launcher import Launcher, SubprocessLauncher
from stageflow.engine.membership import Member, Membership
from stageflow.engine.pool import Pool
from stageflow.engine.report import RunReport, WorkerStatus
from stageflow.engine.runner import dead_letter
from stageflow.engine.snapshots import Effect, Snapshots
from stageflow.engine.tracker import Root, Tracker
from stageflow.engine.watch import Watch
from stageflow.errors import EngineError
from stageflow.pipeline import Pipeline

__all__ = ["WAIT", "Coordinator", "EngineOptions"]

log = logging.getLogger("stageflow.engine")

#: Yielded by an input source that has nothing ready yet (e.g. a slow stdin).
WAIT = object()

_LOOPBACK = "tcp://127.0.0.1:*"
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
    #: A worker silent this long is lost; a worker that hears nothing this long exits.
    heartbeat_timeout: float = 10.0
    #: A record inside process() this long is logged, again every such period.
    stuck_after: float = 30.0
    #: Frames a worker may hold at once.
    credit: int = 2
    #: A stateful stage with snapshot()/restore() is snapshotted after this many records...
    snapshot_every: int = 2048
    #: ...or this many seconds, at a frame's end.
    snapshot_seconds: float = 1.0
    #: Starts the worker processes; a SubprocessLauncher when not given.
    launcher: Launcher | None = None


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
        self.report = report
        self.options = options
        self.sink = dead_letter_sink
        self._started = time.monotonic()
        self.tracker = Tracker()
        self.secret = wire.new_key()
        self.stopping = False
        self.aborting = False
        self._closed = False
        self._requests: queue.SimpleQueue[tuple[str, int, bool]] = queue.SimpleQueue()
        _remove_orphaned_rundirs()
        self._rundir = tempfile.mkdtemp(prefix=f"stageflow-{os.getpid()}-")
        self._ctx: zmq.Context[Any] = zmq.Context()
        self._ctx.setsockopt(zmq.LINGER, 0)
        self._router: zmq.Socket[bytes] = self._ctx.socket(zmq.ROUTER)
        self._router.setsockopt(zmq.MAXMSGSIZE, options.max_message_size * 2)
        self._router.setsockopt(zmq.RCVHWM, 0)
        self._router.bind(options.bind)
        self._pulse = control.Pulse(
            self._ctx,
            options.bind,
            self.secret,
            control.heartbeat_interval(options.heartbeat_timeout),
        )
        # Frames are kept to half the message limit: the rest is room for ids and head.
        self._frame_bytes = options.max_message_size // 2
        self._launcher = options.launcher or SubprocessLauncher()
        names = [stage.name for stage in pipeline.stages]
        self.membership = Membership(self.secret, names, options.heartbeat_timeout)
        self.dispatch = Dispatch(self._ctx, len(names), options.credit, self.secret)
        self.admission = Admission([stage.stateful for stage in pipeline.stages])
        self.snapshots = Snapshots()
        # Stages whose entering records the coordinator reads; the others' pass unparsed.
        self._guarded = [stage.key is not None or stage.stateful for stage in pipeline.stages]
        self.pool = Pool(
            pipeline,
            self._launcher,
            self.membership,
            self._settings,
            self._rundir,
            options.max_start_failures,
        )
        self.finishing = Finishing(len(names), self.command)
        self.watch = Watch(self, options)
        self._poller = zmq.Poller()
        self._poller.register(self._router, zmq.POLLIN)
        self._next_synthetic = -1
        self._wakeup_fd: int | None = None
        self._all_started = False
        # Input lines in the order they were fed, and those done out of order, to know up
        # to which line everything is done.
        self._fed: deque[int] = deque()
        self._done_ahead: set[int] = set()

    def _settings(self, member: Member) -> dict[str, Any]:
        """What a worker process needs to know, as JSON-able data."""
        stage = self.pipeline.stages[member.stage]
        main = sys.modules.get("__main__")
        return {
            "key": member.key,
            "secret": self.secret.hex(),
            "stage": stage.name,
            "index": member.stage,
            "slot": member.slot,
            "uses": stage.entry.reference,
            "main_path": getattr(main, "__file__", None),
            "config": stage.config_json(),
            "retries": stage.spec.retries,
            "timeout": stage.spec.timeout,
            "control": self._router.getsockopt_string(zmq.LAST_ENDPOINT),
            "heartbeat": self._pulse.address,
            "heartbeat_timeout": self.options.heartbeat_timeout,
            "bind": self.options.bind,
            "current_path": member.current_path,
            "max_message_size": self.options.max_message_size,
            "frame_bytes": self._frame_bytes,
            "batch_size": self.options.batch_size,
            "log_level": self.options.log_level,
            "snapshots": stage.snapshots,
            "snapshot_every": self.options.snapshot_every,
            "snapshot_seconds": self.options.snapshot_seconds,
        }

    def command(self, member: Member, command: dict[str, Any]) -> None:
        """Send ``member`` a command on the control plane."""
        self._router.send_multipart(
            [member.identity, *wire.encode_control(command, self.secret)], zmq.NOBLOCK
        )

    # -- start ----------------------------------------------------------------------------

    def start(self) -> None:
        """Start every worker and wait until all are ready (or the run is stopped)."""
        self._apply_requests()
        self.pool.start(time.monotonic())
        deadline = time.monotonic() + self.options.start_timeout
        while self.pool.pending() and not self.stopping:
            if time.monotonic() > deadline:
                raise EngineError(
                    f"workers did not start within {self.options.start_timeout:.0f}s; "
                    "check the stages' setup() and the machine's load"
                )
            self._poll(0.05)
            self.watch.supervise(time.monotonic())
        self._all_started = not self.stopping

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
        exhausted = False
        started = self._started
        if not self._all_started:  # stopped while the workers were starting: nothing to drain
            self.report.interrupted = True
            self.report.seconds = time.monotonic() - started
            return
        if wakeup_fd is not None:
            self._poller.register(wakeup_fd, zmq.POLLIN)
        self._wakeup_fd = wakeup_fd
        yielded = False
        while True:
            self._apply_requests()
            more_input = False
            if not exhausted and not self.stopping:
                exhausted, more_input = self._feed(source)
            if self.stopping:
                self.watch.stop_step(time.monotonic())
            idle = (exhausted or self.stopping) and not self.tracker.roots
            if idle and not self.pool.pending() and not self._advance_finish():
                break
            self.dispatch.pump()
            busy = more_input or self.tracker.completed
            if not busy and yielded and on_idle is not None:
                on_idle()
                yielded = False
            self._poll(0.0 if busy else 0.02)
            self.watch.supervise(time.monotonic())
            for root in self.tracker.take_completed():
                for line in self._emit(root):
                    yielded = True
                    yield line
            self.report.seconds = time.monotonic() - started
        if wakeup_fd is not None:
            self._poller.unregister(wakeup_fd)
            self._wakeup_fd = None
        self.report.finished = exhausted and not self.stopping
        self.report.interrupted = self.stopping
        self.report.seconds = time.monotonic() - started

    def _advance_finish(self) -> bool:
        return self.finishing.advance(self.membership.of_stage, self.pool.pending)

    def _feed(self, source: Iterator[Any]) -> tuple[bool, bool]:
        """Send what the in-flight window allows.

        Returns (exhausted, more): whether the source has ended, and whether it may have
        more ready right now (so the loop should not wait).
        """
        credit = self.options.max_in_flight - len(self.tracker.roots)
        workers = max(1, self.pool.wanted(0))
        chunk = min(credit, self.options.batch_size * workers * self.options.credit)
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
            self._fed.append(seq)
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
            self.send_roots(0, taken)
        return exhausted, more and not exhausted and len(taken) < credit

    def send_roots(self, stage: int, roots: list[Root]) -> None:
        """Queue roots for ``stage`` under their latest attempt, in frames of a fair size."""
        # Spread over the stage's workers, so that a small input still gets a fair share,
        # and into frames under the record and byte limits.
        parts = max(1, min(self.pool.wanted(stage), len(roots)))
        size = min(-(-len(roots) // parts), self.options.batch_size)
        budget = self._frame_bytes
        for start in range(0, len(roots), size):
            ids: list[int] = []
            records: list[bytes] = []
            used = 0
            for root in roots[start : start + size]:
                if records and used + len(root.record) > budget:
                    self._enter(stage, ids, records)
                    ids, records, used = [], [], 0
                ids += (root.seq, root.attempt, root.tag)
                records.append(root.record)
                used += len(root.record) + 1
            self._enter(stage, ids, records)

    def _enter(self, stage: int, ids: list[int], records: list[bytes]) -> None:
        """Queue records for ``stage``: those a stateful stage admits, by slot if keyed."""
        bound = self.pipeline.stages[stage]
        if bound.stateful:
            ids, records = self.admission.admit(
                stage, ids, records, self.tracker.roots.__contains__
            )
            self.report.duplicates_refused = self.admission.refused
        if bound.key is None:
            if records:
                self.dispatch.submit(stage, wire.encode_batch(ids, records, self.secret))
            return
        groups: dict[int, tuple[list[int], list[bytes]]] = {}
        for index, record in enumerate(records):
            slot_ids, slot_records = groups.setdefault(
                slot_of(record, bound.key, bound.workers), ([], [])
            )
            slot_ids += ids[index * 3 : index * 3 + 3]
            slot_records.append(record)
        for slot, (slot_ids, slot_records) in groups.items():
            self.dispatch.submit(
                stage, wire.encode_batch(slot_ids, slot_records, self.secret), slot
            )

    def _poll(self, timeout: float) -> None:
        events = dict(self._poller.poll(int(timeout * 1000)))
        if self._wakeup_fd is not None and self._wakeup_fd in events:
            with contextlib.suppress(BlockingIOError):
                os.read(self._wakeup_fd, 65536)
        if self._router in events:
            self.receive()

    def receive(self) -> bool:
        """Handle what the workers said, a bounded number of messages, without waiting.

        Returns True once nothing more is waiting.
        """
        for _ in range(1000):
            try:
                parts = self._router.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return True
            identity, body = parts[0], parts[1:]
            if body and body[0] == control.HELLO:
                self._on_hello(identity, body)
                continue
            try:
                message, payload = wire.decode_control(body[:3], self.secret)
            except wire.WireError as exc:
                log.warning("dropped a malformed control message: %s", exc)
                continue
            member = self.membership.heard(identity, message)
            if member is not None:
                self._on_message(member, message, payload, body[3:])
        return False

    def _on_hello(self, identity: bytes, body: list[bytes]) -> None:
        member = self.membership.hello(identity, body)
        if member is None:
            refused = self.membership.members.get(identity)
            if refused is not None and refused.failure and refused.process is not None:
                refused.process.kill()

    def _on_message(
        self, member: Member, message: dict[str, Any], payload: bytes, frames: list[bytes]
    ) -> None:
        kind = message["t"]
        if kind == "done":
            self._on_done(member, message, payload, frames)
        elif kind == "ready":
            member.ready = True
            if self._all_started:
                log.info(
                    "worker %s (pid %s) is ready, %.2fs after its start",
                    member.name,
                    member.pid,
                    time.monotonic() - member.started,
                )
            self.pool.on_ready(member)
            state = self.snapshots.state_of(member)
            if state is not None and self.pipeline.stages[member.stage].snapshots:
                # No frame before the state is back: restore first, then join on "restored".
                self.command(member, {"t": "restore", "state": base64.b64encode(state).decode()})
            else:
                self.dispatch.join(member)
                self.finishing.on_ready(member)
        elif kind == "restored":
            self.snapshots.restored += 1
            self.report.snapshots_restored = self.snapshots.restored
            self.dispatch.join(member)
            self.finishing.on_ready(member)
        elif kind == "snap":
            for effect in self.snapshots.kept(member, payload):
                self._apply(member, effect)
            self.report.snapshots_taken = self.snapshots.taken
        elif kind == "failed":
            member.failure = f"failed to load or set up its stage: {message.get('error')}"
        elif kind == "finish-out":
            self._inject(member.stage + 1, payload.split(b"\n"))
        elif kind == "finished":
            member.finished = True
            for effect in self.snapshots.released(member):
                self._apply(member, effect)
            for entry in message.get("dead", ()):
                self._dead_letter(entry)

    def _on_done(
        self, member: Member, message: dict[str, Any], payload: bytes, frames: list[bytes]
    ) -> None:
        count = message.get("n", 0)
        hooked = self.pipeline.stages[member.stage].snapshots
        taken = self.dispatch.reported(member, message["f"], count) if hooked else None
        if not self.dispatch.progress(member, message["f"], count, message.get("end", False)):
            return  # a frame taken back from this worker: someone else does it again
        effect: Effect = (message.get("dead", []), payload, frames)
        if taken is None:
            self._apply(member, effect)
        else:
            self.snapshots.hold(member, *taken, effect)
            if not self.dispatch.holds(member) and self.snapshots.should_ask(member):
                self.command(member, {"t": "snap"})
        member.processed += count
        name = self.pipeline.stages[member.stage].name
        report = self.report
        report.processed[name] = report.processed.get(name, 0) + count
        worker = f"{name}#{member.slot}"
        report.per_worker[worker] = report.per_worker.get(worker, 0) + count

    def _apply(self, member: Member, effect: Effect) -> None:
        """What a worker's report did: dead letters, acknowledgements, outputs sent on."""
        dead, payload, frames = effect
        tracker = self.tracker
        for seq, attempt, entry in dead:
            tracker.dead(seq, attempt, entry)
        try:
            tracker.ack(wire.unpack_ints(payload))
        except wire.WireError as exc:
            log.warning("dropped malformed acknowledgements: %s", exc)
        after = member.stage + 1
        last = after == len(self.pipeline.stages)
        for index in range(0, len(frames), 3):
            parts = frames[index : index + 3]
            if not last and not self._guarded[after]:
                self.dispatch.submit(after, parts)
                continue
            try:
                ids, records = wire.decode_batch(parts, self.secret)
            except wire.WireError as exc:
                log.warning("dropped a malformed result frame: %s", exc)
                continue
            if last:
                tracker.results(ids, records)
            else:
                self._enter(after, ids, records)

    # -- end of stream --------------------------------------------------------------------

    def _inject(self, stage: int, records: list[bytes]) -> None:
        """Outputs of a stage's finish() enter the next stage as new roots."""
        if stage == len(self.pipeline.stages):
            for record in records:
                root = Root(0, record, stage, 0)
                root.results = [record]
                self.tracker.completed.append(root)
            return
        roots = []
        for record in records:
            roots.append(self.tracker.add(self._next_synthetic, record, stage))
            self._next_synthetic -= 1
        self.send_roots(stage, roots)

    def _emit(self, root: Root) -> Iterator[bytes]:
        """Hand out one completed root: the one point every input record passes once."""
        if root.dead:
            for entry in root.dead:
                self._dead_letter(entry)
        self.admission.forget(root.seq)
        if root.seq > 0:
            self.report.records_done += 1
            self._advance_complete(root.seq)
        if root.results:
            self.report.results += len(root.results)
            yield from root.results

    def _advance_complete(self, seq: int) -> None:
        fed, ahead = self._fed, self._done_ahead
        if not fed or fed[0] != seq:
            ahead.add(seq)
        else:
            fed.popleft()
            self.report.complete_through = seq
            while fed and fed[0] in ahead:
                self.report.complete_through = fed.popleft()
                ahead.discard(self.report.complete_through)
        self.report.done_beyond = len(ahead)

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

    # -- scaling --------------------------------------------------------------------------

    def request_scale(self, stage: str, count: int, relative: bool = False) -> None:
        """Ask for ``count`` workers of ``stage`` (or ``count`` more); safe from any thread."""
        names = [s.name for s in self.pipeline.stages]
        if stage not in names:
            raise ValueError(f"no stage named {stage!r}; the stages are {', '.join(names)}")
        if not relative and count < 1:
            raise ValueError(f"a stage needs at least 1 worker, not {count}")
        check_scalable(self.pipeline.stages[names.index(stage)])
        self._requests.put((stage, count, relative))

    def _apply_requests(self) -> None:
        while True:
            try:
                name, count, relative = self._requests.get_nowait()
            except queue.Empty:
                return
            stage = [s.name for s in self.pipeline.stages].index(name)
            target = self.pool.wanted(stage) + count if relative else count
            self.scale(stage, max(1, target))

    def scale(self, stage: int, count: int) -> None:
        before = self.pool.wanted(stage)
        for member in self.pool.scale(stage, count, time.monotonic()):
            self.dispatch.withhold(member)
        log.info(
            "stage %s: %d → %d workers", self.pipeline.stages[stage].name, before, count
        )

    def workers(self) -> list[WorkerStatus]:
        """The live workers now; safe to call from another thread (a snapshot, maybe stale)."""
        return [
            WorkerStatus(
                stage=self.pipeline.stages[m.stage].name,
                name=m.name,
                pid=m.pid,
                host=m.host,
                state="retiring" if m.retiring else "ready" if m.ready else "starting",
                frames=self.dispatch.holds(m),
                processed=m.processed,
            )
            for m in list(self.membership.members.values())
        ]

    # -- stop -----------------------------------------------------------------------------

    def close(self) -> None:
        """Stop every worker (politely, then by force) and release sockets and files."""
        if self._closed:
            return
        self._closed = True
        members = list(self.membership.members.values())
        try:
            if not self.aborting:
                for member in members:
                    if member.ready and member.process is not None:
                        with contextlib.suppress(zmq.ZMQError):
                            self.command(member, {"t": "stop"})
                    elif member.process is not None:
                        member.process.kill()  # still in setup(): it holds nothing
                deadline = time.monotonic() + self.options.stop_timeout
                for member in members:
                    if member.process is not None:
                        with contextlib.suppress(subprocess.TimeoutExpired):
                            member.process.wait(max(0.0, deadline - time.monotonic()))
        finally:
            # Whatever happened above (even a second Ctrl-C), no worker outlives the run.
            for member in members:
                if member.process is not None and member.process.poll() is None:
                    member.process.kill()
            self._launcher.close()
            self._pulse.close()
            self.dispatch.close()
            self._router.close(linger=0)
            self._ctx.term()
            shutil.rmtree(self._rundir, ignore_errors=True)


def _remove_orphaned_rundirs() -> None:
    """Remove the run folders of coordinators that died without cleaning up (kill -9)."""
    base = tempfile.gettempdir()
    with contextlib.suppress(OSError):
        for name in os.listdir(base):
            owner = name.split("-")[1] if name.startswith("stageflow-") else ""
            if not owner.isdigit() or _alive(int(owner)):
                continue
            shutil.rmtree(os.path.join(base, name), ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: not ours to judge
    return True
