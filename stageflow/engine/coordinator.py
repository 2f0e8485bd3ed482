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
    worker DEALER ──hello, progress with outputs, finish outputs──► coordinator ROUTER
    coordinator ROUTER ──commands──► worker DEALER;  coordinator PUB ──beats──► worker SUB
    worker's beat DEALER (its link thread) ──beats──► coordinator ROUTER

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
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import IO, Any

import zmq

from stageflow.engine import control, rundir, shipping, status, wire
from stageflow.engine.admission import Admission
from stageflow.engine.dispatch import Dispatch
from stageflow.engine.feeding import WAIT, Feeder
from stageflow.engine.finishing import Finishing
from stageflow.engine.keying import slot_of
from stageflow.engine.launcher import ForkServerLauncher
from stageflow.engine.listener import Listener
from stageflow.engine.membership import Member, Membership
from stageflow.engine.options import EngineOptions
from stageflow.engine.pool import Pool
from stageflow.engine.report import RunReport, WorkerStatus
from stageflow.engine.scaling import Scaling
from stageflow.engine.snapshots import Effect, Snapshots
from stageflow.engine.supervisor import Supervisor
from stageflow.engine.tracker import Root, Tracker
from stageflow.errors import EngineError
from stageflow.observe.latency import LatencyRecorder
from stageflow.observe.snapshot import Progress
from stageflow.observe.watch import Watch
from stageflow.pipeline import Pipeline
from stageflow.plan import Unit

__all__ = ["WAIT", "Coordinator", "EngineOptions"]

log = logging.getLogger("stageflow.engine")

#: Seconds between two log lines while a run waits for a worker to join.
_WAITING_EVERY = 5.0
#: Seconds close() waits, in all, for the exit statuses of the workers it killed. A launcher
#: that cannot report them (a fork server stopped with SIGSTOP) must not hold the run up for
#: ever: whoever owns the launcher ends it, and the workers with it.
_REAP_TIMEOUT = 5.0
#: How often the wait for workers to exit after the stop looks whether it was aborted.
_ABORT_CHECK = 0.1


def unit_settings(unit: Unit) -> list[dict[str, Any]]:
    """The stages of ``unit`` as a worker's settings give them, in flow order, for
    :func:`stageflow.engine.group.build_runner`."""
    return [
        {
            "stage": stage.name,
            **shipping.stage_settings(stage.cls),  # "uses", and the class by value
            "config": stage.config_json(),
            "retries": stage.spec.retries,
            "timeout": stage.spec.timeout,
        }
        for stage in unit.stages
    ]


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
        # What the workers run: one unit per stage, or per group of consecutive stages
        # fused into one process (stageflow.plan); "stage" below means a unit.
        self.units: tuple[Unit, ...] = pipeline.plan(fuse=options.fuse).units
        self.report = report
        self.options = options
        self.sink = dead_letter_sink
        self.started = time.monotonic()
        self.tracker = Tracker()
        self.secret = wire.new_key()
        self.stopping = False
        self.aborting = False
        self._closed = False
        self._rundir = rundir.make()
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
        self.listener: Listener | None = None
        if options.listen is not None:
            self.listener = Listener(
                self._ctx,
                options.listen,
                options.keys,
                self.secret,
                control.heartbeat_interval(options.heartbeat_timeout),
                options.max_message_size,
            )
            log.info("listening for workers on %s", self.listener.address)
        self._joined = 0
        # Frames are kept to half the message limit: the rest is room for ids and head.
        self._frame_bytes = options.max_message_size // 2
        # A launcher made earlier (stageflow run makes one first) learns the stage modules now.
        self._launcher = options.launcher or ForkServerLauncher()
        self._launcher.prepare(shipping.modules(stage.cls for stage in pipeline.stages))
        names = [unit.name for unit in self.units]
        self.membership = Membership(self.secret, names, options.heartbeat_timeout)
        self.dispatch = Dispatch(self._ctx, len(names), options.credit, self.secret, options.keys)
        # The stage whose Input a unit's frames carry: keyed and stateful stages start a unit.
        self._entries = [unit.stages[0] for unit in self.units]
        self.admission = Admission([stage.stateful for stage in self._entries])
        self._admits = any(stage.stateful for stage in self._entries)
        self.snapshots = Snapshots()
        # Units whose entering records the coordinator reads; the others' pass unparsed.
        self._guarded = [stage.key is not None or stage.stateful for stage in self._entries]
        self.pool = Pool(
            self.units,
            self._launcher,
            self.membership,
            self._settings,
            self._rundir,
            options.max_start_failures,
        )
        self.finishing = Finishing(len(names), self.command)
        self.feeder = Feeder(
            pipeline,
            len(self.units),
            self.tracker,
            report,
            self._enter,
            self.pool.wanted,
            self.dispatch.starving,
            self.secret,
            batch_size=options.batch_size,
            max_in_flight=options.max_in_flight,
            credit=options.credit,
            frame_bytes=self._frame_bytes,
        )
        self.scaling = Scaling(self.units, self.pool, self.dispatch, report, options.credit)
        self.supervisor = Supervisor(self, options)
        self._rejected = wire.Rejections(log, "the coordinator's control socket")
        # Observation (stageflow.observe): set by the Run before the loop starts.
        self.watch: Watch | None = None
        self._poller = zmq.Poller()
        self._poller.register(self._router, zmq.POLLIN)
        self._routers = [self._router]
        if self.listener is not None:
            self._poller.register(self.listener.router, zmq.POLLIN)
            self._routers.append(self.listener.router)
        self._wakeup_fd: int | None = None
        self._all_started = False
        #: The workers of the first start.
        self._initial: set[str] = set()

    @property
    def latency(self) -> LatencyRecorder | None:
        return self.feeder.latency

    @latency.setter
    def latency(self, recorder: LatencyRecorder | None) -> None:
        self.feeder.latency = recorder

    def _settings(self, member: Member) -> dict[str, Any]:
        """What a worker process needs to know, as JSON-able data."""
        unit = self.units[member.stage]
        return {
            "key": member.key,
            "secret": self.secret.hex(),
            "stage": unit.name,
            "index": member.stage,
            "final": member.stage == len(self.units) - 1,
            "slot": member.slot,
            # The stages it hosts, in flow order: more than one for a fused group.
            "stages": unit_settings(unit),
            "control": self._router.getsockopt_string(zmq.LAST_ENDPOINT),
            "heartbeat": self._pulse.address,
            "heartbeat_timeout": self.options.heartbeat_timeout,
            "bind": self.options.bind,
            "current_path": member.current_path,
            "max_message_size": self.options.max_message_size,
            "frame_bytes": self._frame_bytes,
            "batch_size": self.options.batch_size,
            "log_level": self.options.log_level,
            "snapshots": self._entries[member.stage].snapshots,
            "snapshot_every": self.options.snapshot_every,
            "snapshot_seconds": self.options.snapshot_seconds,
            "nice": self.options.upstream_nice if member.stage < len(self.units) - 1 else 0,
        }

    def _remote_settings(self, member: Member) -> dict[str, Any]:
        """A joined worker's settings: it fills in its own host's addresses."""
        assert self.listener is not None
        settings = self._settings(member)
        for stage in settings["stages"]:
            stage.pop(shipping.PICKLED, None)  # never a class over the network: by name only
        return {
            **settings,
            "control": None,
            "heartbeat": self.listener.pulse.address,
            "bind": None,
            "current_path": None,
            "nice": 0,  # another host's CPU, shared with who knows what: left as it is
        }

    def command(self, member: Member, command: dict[str, Any]) -> None:
        """Send ``member`` a command on the control plane (a joined one on the listener's)."""
        router = self.listener.router if member.remote and self.listener else self._router
        router.send_multipart(
            [member.identity, *wire.encode_control(command, self.secret)], zmq.NOBLOCK
        )

    # -- start ----------------------------------------------------------------------------

    def start(self) -> None:
        """Start the workers a run needs and wait until records can flow (or the run is
        stopped): a worker of each stage is ready (every slot of a keyed one). Only then are
        the others started; they join as they become ready, so the first result does not
        wait for the slowest start."""
        self.scaling.apply()
        self._initial = {member.key for member in self.pool.start(time.monotonic())}
        deadline = time.monotonic() + self.options.start_timeout
        told = 0.0
        while (not self.pool.ready_to_begin() or self._unserved()) and not self.stopping:
            now = time.monotonic()
            if now > deadline:
                raise EngineError(
                    f"workers did not start within {self.options.start_timeout:.0f}s; "
                    "check the stages' setup() and the machine's load"
                    + ("" if not self._unserved() else ", and that workers can join")
                )
            if self._unserved() and now - told >= _WAITING_EVERY:
                told = now
                log.info(
                    "stage %s has no worker yet: waiting for one to join "
                    "(stageflow worker --join %s --keys DIR)",
                    ", ".join(self._unserved()),
                    self.listener.address if self.listener else "ADDRESS",
                )
            self._poll(0.05)
            self.supervisor.supervise(time.monotonic())
        if not self.stopping:
            self._initial |= {member.key for member in self.pool.start_rest(time.monotonic())}
        self._all_started = not self.stopping

    def _unserved(self) -> list[str]:
        """Stages served only by joined workers that have no ready worker yet."""
        return [
            stage.name
            for index, stage in enumerate(self.units)
            if stage.workers == 0 and not any(m.ready for m in self.membership.of_stage(index))
        ]

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
        for batch in self.batches(source, wakeup_fd, on_idle):
            for _seq, results in batch:
                yield from results

    def completions(
        self,
        source: Iterator[Any],
        wakeup_fd: int | None = None,
        on_idle: Callable[[], None] | None = None,
    ) -> Iterator[tuple[int, list[bytes]]]:
        """Like :meth:`run`, but yield ``(seq, result lines)`` once per completed record.

        The record's dead letters are in the dead-letter sink before it is yielded, and
        those of the records after it are not yet, so a caller that journals its output
        knows what each file holds (``seq`` is not positive for what ``finish()`` emitted).
        """
        for _ in self._turns(source, wakeup_fd, on_idle):
            for root in self.tracker.take_completed():
                yield from self._hand_out([root])

    def batches(
        self,
        source: Iterator[Any],
        wakeup_fd: int | None = None,
        on_idle: Callable[[], None] | None = None,
    ) -> Iterator[list[tuple[int, list[bytes]]]]:
        """Like :meth:`completions`, but a list of the records completed since the last one:
        a yield per turn of the loop rather than per record. Every dead letter of the list's
        records is in the sink before it is yielded."""
        completed = self.tracker.completed
        for _ in self._turns(source, wakeup_fd, on_idle):
            roots = list(completed)
            completed.clear()
            yield self._hand_out(roots)

    def prime(self, source: Iterator[Any]) -> None:
        """Send the first input records to the workers now, ahead of the loop."""
        if self._all_started and not self.stopping:
            self.feeder.feed(source)
            self.dispatch.pump()

    def _turns(
        self,
        source: Iterator[Any],
        wakeup_fd: int | None,
        on_idle: Callable[[], None] | None,
    ) -> Iterator[None]:
        """Run the loop; yield whenever completed roots wait in the tracker to be handed out."""
        exhausted = False
        started = self.started
        if not self._all_started:  # stopped while the workers were starting: nothing to drain
            self.report.interrupted = True
            self.report.seconds = time.monotonic() - started
            return
        if wakeup_fd is not None:
            self._poller.register(wakeup_fd, zmq.POLLIN)
        self._wakeup_fd = wakeup_fd
        yielded = False
        while True:
            # Autoscale only while records flow: never while stopping or running finish().
            flowing = not self.stopping and not (exhausted and not self.tracker.roots)
            self.scaling.apply(autoscale=flowing)
            more_input = False
            if not exhausted and not self.stopping:
                exhausted, more_input = self.feeder.feed(source)
            elif self.feeder.forming:
                self.feeder.release()  # stopping: what was read is in flight like the rest
            if self.stopping:
                self.supervisor.stop_step(time.monotonic())
            idle = (exhausted or self.stopping) and not self.tracker.roots
            if idle and not self.pool.pending() and not self._advance_finish():
                break
            self.dispatch.pump()
            busy = more_input or self.tracker.completed
            if not busy and yielded and on_idle is not None:
                on_idle()
                yielded = False
            self._poll(0.0 if busy else 0.02)
            self.supervisor.supervise(time.monotonic())
            if self.watch is not None:
                self.watch.tick()
            if self.tracker.completed:
                yielded = True
                yield None
            self.report.seconds = time.monotonic() - started
        if wakeup_fd is not None:
            self._poller.unregister(wakeup_fd)
            self._wakeup_fd = None
        self.report.finished = exhausted and not self.stopping
        self.report.interrupted = self.stopping
        self.report.seconds = time.monotonic() - started

    def _advance_finish(self) -> bool:
        return self.finishing.advance(self.membership.of_stage, self.pool.pending)

    def _enter(
        self, stage: int, ids: list[int], records: list[bytes], parts: list[bytes] | None = None
    ) -> None:
        """Queue records for ``stage``: those a stateful stage admits, by slot if keyed.

        ``parts`` is the signed frame the records came in, sent on as it is when all of
        them are admitted to an unkeyed stage.
        """
        bound = self._entries[stage]
        if bound.stateful:
            count = len(records)
            ids, records = self.admission.admit(
                stage, ids, records, self.tracker.roots.__contains__
            )
            self.report.duplicates_refused = self.admission.refused
            if len(records) != count:
                parts = None
        if bound.key is None:
            if records:
                if parts is None:
                    parts = wire.encode_batch(ids, records, self.secret)
                self.dispatch.submit(stage, parts)
            return
        groups: dict[int, tuple[list[int], list[bytes]]] = {}
        for index, record in enumerate(records):
            slot_ids, slot_records = groups.setdefault(
                slot_of(record, bound.key, self.units[stage].workers), ([], [])
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
        if any(router in events for router in self._routers):
            self.receive()

    def receive(self) -> bool:
        """Handle what the workers said, a bounded number of messages, without waiting.

        Returns True once nothing more is waiting.
        """
        quiet = 0
        for turn in range(1000):
            router = self._routers[turn % len(self._routers)]
            try:
                parts = router.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                quiet += 1
                if quiet == len(self._routers):
                    return True
                continue
            quiet = 0
            identity, body = parts[0], parts[1:]
            if body and body[0] == control.JOIN and router is not self._router:
                self._on_join(identity, body)
                continue
            if body and body[0] == control.HELLO:
                self._on_hello(identity, body)
                continue
            try:
                message, payload = wire.decode_control(body[:3], self.secret)
            except wire.WireError as exc:
                self._rejected.add(exc)
                continue
            if identity.endswith(control.BEATS):  # a worker's link thread: beats only
                if message["t"] == "beat":
                    self.membership.heard(identity[: -len(control.BEATS)], message)
                continue
            member = self.membership.heard(identity, message)
            if member is not None:
                self._on_message(member, message, payload, body[3:])
        return False

    def _on_join(self, identity: bytes, body: list[bytes]) -> None:
        """Admit a worker from another host as a member and send it its settings."""
        assert self.listener is not None
        info = self.listener.request(body)
        if info is None:
            return
        names = [unit.name for unit in self.units]
        why = self.listener.refusal(info, names)
        if why is not None:
            self.listener.answer(identity, control.REFUSED, why)
            return
        stage = names.index(info["stage"]) if info.get("stage") else self._neediest()
        for cls in (bound.cls for bound in self.units[stage].stages):
            if shipping.by_value(cls):
                why = (
                    f"stage {names[stage]!r} is defined in a script or a function "
                    f"({cls.__module__}:{cls.__qualname__}), so no other host can import it; "
                    "move it into a module installed on the worker hosts"
                )
                self.listener.answer(identity, control.REFUSED, why)
                return
        number = self._joined
        self._joined += 1
        host = str(info.get("host"))
        member = Member(
            key=f"{stage}.j{number}",
            stage=stage,
            slot=number,
            name=f"{names[stage]}@{host}#{number}",
            process=None,
            current_path=None,
            started=time.monotonic(),
            remote=True,
            public=str(info["public"]).encode() if info.get("public") else None,
        )
        self.membership.add(member)
        self.listener.answer(identity, control.WELCOME, self._remote_settings(member))
        log.info("worker %s (pid %s) joined stage %s", member.name, info.get("pid"), names[stage])

    def _neediest(self) -> int:
        """The stage a joining worker helps most: one only joiners serve, else the busiest."""

        def need(index: int) -> tuple[bool, float]:
            workers = len(self.membership.of_stage(index))
            only_joiners = self.units[index].workers == 0
            return only_joiners and not workers, self.dispatch.queued(index) / (workers + 1)

        return max(range(len(self.units)), key=need)

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
            # A replacement's or an added worker's readiness is news; the first ones' is
            # detail (-v).
            news = self._all_started and member.key not in self._initial
            log.log(
                logging.INFO if news else logging.DEBUG,
                "worker %s (pid %s) is ready, %.2fs after its start",
                member.name,
                member.pid,
                time.monotonic() - member.started,
            )
            self.pool.on_ready(member)
            state = self.snapshots.state_of(member)
            if state is not None and self._entries[member.stage].snapshots:
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
            self.feeder.inject(member.stage + 1, payload.split(b"\n"))
        elif kind == "finished":
            member.finished = True
            for effect in self.snapshots.released(member):
                self._apply(member, effect)
            for entry in message.get("dead", ()):
                self._dead_letter(entry)

    def _on_done(
        self, member: Member, message: dict[str, Any], payload: bytes, frames: list[bytes]
    ) -> None:
        # Counted per stage, even inside a fused group, as if it were not fused.
        counts: dict[str, int] = message.get("n", {})
        count = counts.get(self.units[member.stage].stages[0].name, 0)
        hooked = self.units[member.stage].stages[0].snapshots
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
        busy = message.get("b", {})
        # "#slot" for a local worker, "@host#n" for a joined one.
        where = member.name[len(self.units[member.stage].name) :]
        for name, stage_count in counts.items():
            self.report.add_ack(name, f"{name}{where}", stage_count, busy.get(name))
        # At once, not on the loop's next turn: the credit this report freed and the frames
        # it queued would otherwise wait for every result of this turn to be handed out,
        # while the workers (at most two frames each) run dry.
        self.dispatch.pump()

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
        last = after == len(self.units)
        for index in range(0, len(frames), 3):
            parts = frames[index : index + 3]
            if not last and not self._guarded[after]:
                self.dispatch.submit(after, parts)
                continue
            try:
                ids, records = wire.decode_batch(parts, self.secret)
            except wire.WireError as exc:
                self._rejected.add(exc)
                continue
            if last:
                tracker.results(ids, records)
            else:
                self._enter(after, ids, records, parts)

    # -- end of stream --------------------------------------------------------------------

    def _hand_out(self, roots: list[Root]) -> list[tuple[int, list[bytes]]]:
        """Hand out completed roots, the one point every input record passes once: their
        dead letters into the sink, then the bookkeeping for all of them (a loop per concern
        rather than calls per root); ``(seq, results)`` for each."""
        if self.feeder.latency is not None:
            for root in roots:
                self.feeder.latency.done(root)
        seqs = [root.seq for root in roots]
        if self._admits:
            for seq in seqs:
                self.admission.forget(seq)
        for root in roots:
            if root.dead:
                for entry in root.dead:
                    self._dead_letter(entry)
        lines = [seq for seq in seqs if seq > 0]  # finish() outputs belong to no line
        self.report.records_done += len(lines)
        self.feeder.done_all(lines)
        results = [root.results or [] for root in roots]
        self.report.results += sum(map(len, results))
        return list(zip(seqs, results, strict=True))

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

    # -- outside views ----------------------------------------------------------------------

    def request_scale(self, stage: str, count: int, relative: bool = False) -> None:
        """Ask for ``count`` workers of ``stage`` (or ``count`` more); safe from any thread."""
        self.scaling.request(stage, count, relative)

    def workers(self) -> list[WorkerStatus]:
        """The live workers now; safe to call from another thread."""
        return status.workers(self)

    # -- observation: the one method stageflow.observe reads the engine through ------------

    def progress(self) -> Progress:
        """A snapshot of the run so far (see :mod:`stageflow.observe.snapshot`)."""
        return status.progress(self)

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
                    # A joined worker still starting is told too: it is not ours to kill.
                    if member.remote or (member.ready and member.process is not None):
                        with contextlib.suppress(zmq.ZMQError):
                            self.command(member, {"t": "stop"})
                    elif member.process is not None:
                        member.process.kill()  # still in setup(): it holds nothing
                deadline = time.monotonic() + self.options.stop_timeout
                for member in members:
                    # In short waits: an abort meanwhile (a second Ctrl-C) ends them at once.
                    while member.process is not None and not self.aborting:
                        left = deadline - time.monotonic()
                        try:
                            member.process.wait(max(0.0, min(left, _ABORT_CHECK)))
                            break
                        except subprocess.TimeoutExpired:
                            if left <= _ABORT_CHECK:
                                break
        finally:
            # Whatever happened above (even a second Ctrl-C), no worker outlives the run.
            for member in members:
                if member.process is not None and member.process.poll() is None:
                    member.process.kill()
            if self.options.launcher is None:
                self._launcher.close()
            reaped_by = time.monotonic() + _REAP_TIMEOUT
            for member in members:
                if member.process is not None:
                    try:
                        status = member.process.wait(max(0.0, reaped_by - time.monotonic()))
                    except subprocess.TimeoutExpired:
                        log.warning(
                            "worker %s: no exit status %.0fs after it was killed (its launcher "
                            "does not answer); it ends with its launcher",
                            member.name,
                            _REAP_TIMEOUT,
                        )
                        continue
                    log.debug("worker %s exited with status %s", member.name, status)
            self._rejected.flush()
            if self.listener is not None:
                self.listener.close()
            self._pulse.close()
            self.dispatch.close()
            self._router.close(linger=0)
            self._ctx.term()
            shutil.rmtree(self._rundir, ignore_errors=True)
