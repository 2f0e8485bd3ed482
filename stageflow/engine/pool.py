"""How many workers each stage has, and starting them through the launcher.

Each stage has numbered slots; a slot's worker is started through the launcher, replaced
with backoff when it is lost, and given up on when it keeps failing to start. Scaling a stage
adds slots, or marks the highest ones unwanted: their workers are retired (they finish what
they hold, run ``finish()`` and exit) and their slots go away.
"""

from __future__ import annotations

import itertools
import logging
import os
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from stageflow.engine.launcher import Launcher
from stageflow.engine.membership import Member, Membership
from stageflow.errors import EngineError
from stageflow.plan import Unit

__all__ = ["Pool", "Slot"]

log = logging.getLogger("stageflow.engine")

#: Seconds a replacement waits after a death, doubled per quick death, up to the maximum.
RESTART_DELAY = 0.05
RESTART_DELAY_MAX = 2.0
#: A worker that lived this long before dying resets its slot's backoff.
HEALTHY_AFTER = 5.0


@dataclass(eq=False)
class Slot:
    """One worker position of a stage; its process changes when it is replaced."""

    stage: int
    index: int
    member: Member | None = None
    restart_at: float | None = None
    start_failures: int = 0
    quick_deaths: int = 0
    wanted: bool = True


class Pool:
    """The slots of every stage and the processes in them."""

    def __init__(
        self,
        units: Sequence[Unit],
        launcher: Launcher,
        membership: Membership,
        settings: Callable[[Member], dict[str, Any]],
        rundir: str,
        max_start_failures: int,
    ) -> None:
        self.units = units
        self.launcher = launcher
        self.membership = membership
        self.settings = settings
        self.rundir = rundir
        self.max_start_failures = max_start_failures
        self._spawned = itertools.count(1)
        #: Slots given up on per stage, because their workers kept failing to start.
        self.given_up = [0] * len(units)
        self.slots: list[list[Slot]] = [
            [Slot(s, j) for j in range(unit.workers)] for s, unit in enumerate(units)
        ]

    def start(self, now: float) -> list[Member]:
        """Start what a run needs to begin (see :meth:`ready_to_begin`), in one request to
        the launcher: the first worker of every stage, and every worker of a keyed stage."""
        first = [
            slot
            for stage, slots in enumerate(self.slots)
            for slot in (slots if self.keyed(stage) else slots[:1])
        ]
        return self._launch([slot for slot in first if slot.member is None], now)

    def start_rest(self, now: float) -> list[Member]:
        """Start every other slot's worker, in one request; return them.

        Called once the run has begun: started with the first ones, they would take turns
        with them on the machine's cores while the run waits for those alone.
        """
        rest = [
            slot
            for slots in self.slots
            for slot in slots
            if slot.member is None and slot.restart_at is None and slot.wanted
        ]
        return self._launch(rest, now)

    def ready_to_begin(self) -> bool:
        """Whether records can flow: every stage with slots has a ready worker, and a keyed
        stage one in every slot (its keys belong to their slots and nobody else's).

        From then on, a worker that fails to start is given up on with a warning (it has
        ready peers) or replaced, so the run no longer fails to start.
        """
        for stage, slots in enumerate(self.slots):
            ready = [s.member is not None and s.member.ready for s in slots if s.wanted]
            if ready and not (all(ready) if self.keyed(stage) else any(ready)):
                return False
        return True

    def keyed(self, stage: int) -> bool:
        """Whether ``stage`` is keyed: its keys belong to its slots, one worker each."""
        return self.units[stage].stages[0].key is not None

    def spawn(self, slot: Slot, now: float) -> Member:
        return self._launch([slot], now)[0]

    def _launch(self, slots: list[Slot], now: float) -> list[Member]:
        if not slots:
            return []  # nor a word to the launcher, which would wait for its server first
        members = []
        for slot in slots:
            slot.restart_at = None
            # Unique in the run, even for a slot made again after scaling down and up: the
            # key is the worker's identity on the control plane.
            key = f"{slot.stage}.{slot.index}.{next(self._spawned)}"
            members.append(
                Member(
                    key=key,
                    stage=slot.stage,
                    slot=slot.index,
                    name=f"{self.units[slot.stage].name}#{slot.index}",
                    process=None,
                    current_path=os.path.join(self.rundir, f"current-{key}"),
                    started=now,
                )
            )
        processes = self.launcher.spawn_all([self.settings(member) for member in members])
        for slot, member, process in zip(slots, members, processes, strict=True):
            member.process = process
            # No pid here: a forked worker's is known once the server has forked it, and
            # the launcher does not wait for that.
            log.debug("started worker %s", member.name)
            self.membership.add(member)
            slot.member = member
        return members

    def slot_of(self, member: Member) -> Slot | None:
        for slot in self.slots[member.stage]:
            if slot.member is member:
                return slot
        return None

    def wanted(self, stage: int) -> int:
        return sum(1 for slot in self.slots[stage] if slot.wanted)

    def on_lost(self, member: Member, now: float) -> float | None:
        """Plan the replacement of a lost member; the delay, or None if it is not replaced."""
        slot = self.slot_of(member)
        if slot is None:
            return None
        slot.member = None
        if not slot.wanted:
            self.slots[slot.stage].remove(slot)
            return None
        if not member.ready and not self._start_failed(slot, member):
            return None
        if now - member.started > HEALTHY_AFTER:
            slot.quick_deaths = 0
        slot.quick_deaths += 1
        delay: float = min(RESTART_DELAY * 2.0 ** (slot.quick_deaths - 1), RESTART_DELAY_MAX)
        slot.restart_at = now + delay
        return delay

    def _start_failed(self, slot: Slot, member: Member) -> bool:
        """Count a failed start; False if the slot is given up on (its peers carry on)."""
        slot.start_failures += 1
        code = member.process.returncode if member.process is not None else None
        limit = self.max_start_failures
        if code is not None and code < 0 and member.failure is None:
            # Killed by a signal while starting: maybe from outside (an operator, the OOM
            # killer), so allow more tries than for an error of the stage's own.
            limit *= 3
        if slot.start_failures < limit:
            return True
        stage = self.units[slot.stage].name
        times = "once" if slot.start_failures == 1 else f"{slot.start_failures} times in a row"
        why = f"{times}; the last one {_why(member, code)}"
        # A keyed stage cannot do without a slot: that slot's keys go to nobody else.
        peers = self.slots[slot.stage]
        ready_peer = any(s.member is not None and s.member.ready for s in peers)
        if not self.keyed(slot.stage) and ready_peer:
            log.warning("gave up on worker %s, which failed to start %s", member.name, why)
            self.slots[slot.stage].remove(slot)
            self.given_up[slot.stage] += 1
            return False
        raise EngineError(f"the workers of stage {stage!r} failed to start {why}")

    def on_ready(self, member: Member) -> None:
        slot = self.slot_of(member)
        if slot is not None:
            slot.start_failures = 0

    def due(self, now: float) -> list[Member]:
        """Start the replacements whose time has come; return them."""
        return [
            self.spawn(slot, now)
            for stage_slots in self.slots
            for slot in list(stage_slots)
            if slot.restart_at is not None and now >= slot.restart_at
        ]

    def pending(self, stage: int | None = None) -> bool:
        """Whether a wanted slot (of ``stage``, or of any) has no ready worker yet."""
        groups = self.slots if stage is None else [self.slots[stage]]
        return any(
            slot.wanted and (slot.member is None or not slot.member.ready)
            for group in groups
            for slot in group
        )

    def scale(self, stage: int, count: int, now: float) -> list[Member]:
        """Make ``stage`` have ``count`` workers; return the ready ones to retire."""
        slots = self.slots[stage]
        wanted = [slot for slot in slots if slot.wanted]
        retire = []
        if count > len(wanted):
            start = max((slot.index for slot in slots), default=-1) + 1
            for index in range(start, start + count - len(wanted)):
                slot = Slot(stage, index)
                slots.append(slot)
                self.spawn(slot, now)
        for slot in wanted[count:]:
            slot.wanted = False
            member = slot.member
            if member is None:
                slots.remove(slot)
            elif member.ready:
                member.retiring = True
                retire.append(member)
            elif member.process is not None:
                member.process.kill()  # still starting: nothing to finish
        return retire


def _why(member: Member, code: int | None) -> str:
    if member.failure:
        return member.failure
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = str(-code)
        return f"was killed by signal {name} before it was ready"
    if code is None:
        return "did not become ready in time"
    return f"exited with status {code} before it was ready, without saying why"
