"""Supervision: what the coordinator does about lost, stuck, retiring and stopping workers.

- A **lost** worker (its process ended, or its heartbeats stopped and it was killed) gives
  back the records it held, which go at once to its peers; the record it was inside
  ``process()`` for is blamed, and dead-lettered as poison after ``max_deaths`` deaths; the
  pool starts a replacement.
- A record **stuck** inside ``process()`` for ``stuck_after`` seconds is logged, again every
  such period; the records queued behind it in the same worker are given to its peers under
  a new attempt (whichever attempt completes first wins), so they are not held hostage.
- A **retiring** worker (scaled down) is told to retire once it holds no frame.
- A **stopping** run drains the records in flight; a record still inside ``process()``
  ``stop_timeout`` after the stop, in the same call since, is set aside (dead-lettered as
  ``Stopped``) and its worker killed, so a stuck worker cannot hold the stop up.
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import TYPE_CHECKING

from stageflow.engine import control, wire
from stageflow.engine.membership import Member
from stageflow.engine.runner import CurrentRecord, dead_letter
from stageflow.engine.tracker import Root

if TYPE_CHECKING:
    from stageflow.engine.coordinator import Coordinator, EngineOptions

__all__ = ["Supervisor"]

log = logging.getLogger("stageflow.engine")

_EVERY = 0.05


class Supervisor:
    """Supervises one coordinator's workers; :meth:`supervise` it from the loop."""

    def __init__(self, coordinator: Coordinator, options: EngineOptions) -> None:
        self.co = coordinator
        self.options = options
        self._last = 0.0
        self._told_to_retire: set[str] = set()
        self._stop_at: float | None = None
        self._stopped_stuck = False

    def supervise(self, now: float) -> None:
        if now - self._last < _EVERY:
            return
        self._last = now
        co = self.co
        # Everything waiting first: what the lost said before they went still counts, and
        # after a pause of the caller (a slow reader) the others' beats are all there.
        while not co.receive():
            pass
        for member, reason in co.membership.lost(now):
            self._on_lost(member, reason, now)
        for member in list(co.membership.members.values()):
            if not member.ready and now - member.started > self.options.start_timeout:
                log.warning(
                    "worker %s did not become ready within %.0fs; killing it",
                    member.name,
                    self.options.start_timeout,
                )
                if member.process is not None:
                    member.process.kill()  # its loss is handled on the next round
            retire = member.retiring and member.key not in self._told_to_retire
            if retire and not co.dispatch.holds(member):
                self._told_to_retire.add(member.key)
                co.command(member, {"t": "retire"})
        co.pool.due(now)
        for member in co.membership.stuck(self.options.stuck_after):
            self._report_stuck(member)
            self.speculate(member)

    # -- lost -----------------------------------------------------------------------------

    def _on_lost(self, member: Member, reason: str, now: float) -> None:
        co = self.co
        code = member.process.returncode if member.process is not None else None
        if not (member.retiring and code == 0):
            self._blame(member, code)
        again = co.dispatch.leave(member, co.tracker.roots.__contains__)
        if member.retiring and code == 0:
            log.info("worker %s retired after %d records", member.name, member.processed)
            co.pool.on_lost(member, now)
            return
        co.report.redeliveries += again
        delay = co.pool.on_lost(member, now)
        if delay is not None:
            co.report.add_restart(*(stage.name for stage in co.units[member.stage].stages))
        then = f"; a replacement starts in {delay:.2f}s" if delay is not None else ""
        log.warning(
            "worker %s (pid %s) %s; the %d records it held go to its peers%s",
            member.name,
            member.pid if member.pid is not None else getattr(member.process, "pid", "?"),
            reason,
            again,
            then,
        )
        stage = co.units[member.stage].stages[0]
        if stage.snapshots:
            again += self._replay(member)
        if stage.stateful:
            co.report.stateful_redelivered += again
            if member.processed and not member.finished and not stage.snapshots:
                self._state_lost(member, stage.name)

    def _replay(self, member: Member) -> int:
        """Send again what ``member`` processed since its slot's last kept snapshot."""
        co = self.co
        ids, records = co.snapshots.lost(member)
        keep = [i for i in range(len(records)) if ids[i * 3] in co.tracker.roots]
        if not keep:
            return 0
        slot = member.slot if co.units[member.stage].stages[0].key is not None else None
        kept_ids = [n for i in keep for n in ids[i * 3 : i * 3 + 3]]
        parts = wire.encode_batch(kept_ids, [records[i] for i in keep], co.secret)
        co.dispatch.requeue(member.stage, parts, slot)
        return len(keep)

    def _state_lost(self, member: Member, stage: str) -> None:
        """A stateful worker died with what it had taken in: its finish() would be short."""
        why = (
            f"stage {stage!r} lost the state of its worker {member.name}, which had processed "
            f"{member.processed} records, so its finish() output would be wrong"
        )
        log.error("%s", why)
        self.co.report.state_lost.append(why)

    def _blame(self, member: Member, code: int | None) -> None:
        path = member.current_path
        if path is None:
            return
        current = CurrentRecord.read(path)
        with contextlib.suppress(OSError):
            os.unlink(path)
        if current is None:
            return
        seq, attempt, position = current
        tracker = self.co.tracker
        root = tracker.roots.get(seq)
        if root is None or not root.live_attempt(attempt):
            return
        root.deaths += 1
        if root.deaths >= self.options.max_deaths:
            tracker.give_up(
                root,
                dead_letter(
                    seq,
                    self.stage_of(member, position),
                    "PoisonRecord",
                    f"{root.deaths} workers died while processing this record "
                    f"(last exit status {code}); it was set aside",
                    root.record,
                ),
            )

    def stage_of(self, member: Member, position: int | None = None) -> str:
        """The stage ``member`` is (or was) inside process() for: inside a fused group, the
        one its current-record file names (position 0 when that cannot be read)."""
        stages = self.co.units[member.stage].stages
        if position is None and member.current_path is not None:
            current = CurrentRecord.read(member.current_path)
            position = current[2] if current is not None else 0
        return stages[min(position or 0, len(stages) - 1)].name

    # -- stuck ----------------------------------------------------------------------------

    def _report_stuck(self, member: Member) -> None:
        assert member.current is not None
        seq = member.current[0]
        what = f"the record of input line {seq}" if seq > 0 else "a record from finish()"
        log.warning(
            "stage %s, worker %s (pid %s): %s has been inside process() for %.0fs",
            self.stage_of(member),
            member.name,
            member.pid,
            what,
            member.current_for,
        )

    def speculate(self, member: Member) -> int:
        """Give the records queued behind ``member``'s current one to its peers.

        Only to peers that could take them: a ready worker of the same stage that is not
        stuck itself. Without one (a single worker, or a keyed stage, whose records may go
        only to their slot's worker) the records stay where they are, not counted as
        redelivered, and are looked at again when the member is next reported.
        """
        co = self.co
        if co.units[member.stage].stages[0].key is not None or not self._free_peers(member):
            return 0
        stuck = member.current[0] if member.current is not None else None
        seqs: set[int] = set()
        for frame in co.dispatch.frames_of(member):
            if not frame.speculated:
                frame.speculated = True
                ids, _ = frame.remaining(co.secret)
                seqs.update(ids[0::3])
        if stuck is not None:
            seqs.discard(stuck)
        roots = [co.tracker.roots[seq] for seq in seqs if seq in co.tracker.roots]
        by_stage: dict[int, list[Root]] = {}
        for root in roots:
            co.tracker.redeliver(root)
            by_stage.setdefault(root.stage, []).append(root)
        for stage, group in sorted(by_stage.items()):
            co.feeder.send_roots(stage, group)
        if roots:
            co.report.redeliveries += len(roots)
            log.info("gave the %d records queued behind it to other workers", len(roots))
        return len(roots)

    def _free_peers(self, member: Member) -> list[Member]:
        """The ready workers of ``member``'s stage, other than it, not stuck themselves."""
        threshold = self.options.stuck_after
        return [
            peer
            for peer in self.co.membership.of_stage(member.stage)
            if peer is not member
            and peer.ready
            and not peer.retiring
            and (peer.current is None or peer.current_for < threshold)
        ]

    # -- stop -----------------------------------------------------------------------------

    def stop_step(self, now: float) -> None:
        """Move a stopping run on: after ``stop_timeout``, end what is stuck in process()."""
        if self._stop_at is None:
            self._stop_at = now + self.options.stop_timeout
            self._drop_starting()
        elif not self._stopped_stuck and now >= self._stop_at:
            self._stopped_stuck = True
            self._set_aside_stuck()

    def _drop_starting(self) -> None:
        """Kill the workers still in setup() and give up their slots: they hold nothing, and
        a run that began without them (Pool.ready_to_begin) must not wait for them to end."""
        co = self.co
        for member in list(co.membership.members.values()):
            slot = co.pool.slot_of(member)
            keyed = co.units[member.stage].stages[0].key is not None  # its slot stays
            if member.ready or member.process is None or slot is None or keyed:
                continue
            if any(peer.ready for peer in co.membership.of_stage(member.stage)):
                slot.wanted = False
                member.process.kill()

    def _set_aside_stuck(self) -> None:
        """Dead-letter the records inside process() since the stop, and kill their workers.

        The worker's other records go to its peers, as after any loss; it is replaced only
        when it was the last worker of its stage, which must still drain.
        """
        co = self.co
        # A beat may be one interval old: a record seen since about the stop counts.
        since = self.options.stop_timeout - control.heartbeat_interval(
            self.options.heartbeat_timeout
        )
        for member in list(co.membership.members.values()):
            if member.current is None or member.current_for < since:
                continue
            root = co.tracker.roots.get(member.current[0])
            if root is not None:
                co.tracker.give_up(
                    root,
                    dead_letter(
                        root.seq,
                        self.stage_of(member),
                        "Stopped",
                        f"the run was stopped while this record had been inside process() "
                        f"for {member.current_for:.0f}s in worker {member.name}; it was set "
                        "aside so the run could end",
                        root.record,
                    ),
                )
            log.warning("killing worker %s, stuck inside process() after the stop", member.name)
            slot = co.pool.slot_of(member)
            keyed = co.units[member.stage].stages[0].key is not None  # its slot stays
            if slot is not None and co.pool.wanted(member.stage) > 1 and not keyed:
                slot.wanted = False
            if member.process is not None:
                member.process.kill()
