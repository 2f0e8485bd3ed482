"""Dispatch by credit: which worker holds which frame, and sending frames against credit.

Every frame waiting for a stage sits in that stage's queue. A worker of the stage that holds
fewer than ``credit`` frames is sent the next one, on a PUSH socket connected to that worker
alone (a directed send), prefixed with the frame's id; the frame then counts as held by the
worker until it reports the frame's end. So a slow or stuck worker takes no more work while
the others go on, and when a worker is lost exactly the records it held and had not yet
reported are queued again, at the head of their stage's queue, for its peers (or its
replacement). Frames are forwarded as the workers signed them: the coordinator parses a
record only on its way into a keyed or stateful stage.

A keyed stage's frames are each for one slot (:mod:`~stageflow.engine.keying`): they wait in
that slot's queue and go only to the slot's worker, or to its replacement.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable
from typing import Any

import zmq

from stageflow.engine import wire
from stageflow.engine.membership import Member
from stageflow.security import Keys

__all__ = ["Dispatch", "Frame"]


class Frame:
    """A batch of records for one stage, and how far its holder has got with it."""

    __slots__ = ("done", "fid", "holder", "parts", "slot", "speculated", "stage")

    def __init__(self, fid: int, stage: int, parts: list[bytes], slot: int | None) -> None:
        self.fid = fid
        self.stage = stage
        self.slot = slot
        self.parts = parts
        self.done = 0  # records the holder has reported
        self.holder: Member | None = None
        self.speculated = False

    def remaining(self, key: bytes) -> tuple[list[int], list[bytes]]:
        """Ids and records the holder has not reported yet."""
        ids, records = wire.decode_batch(self.parts, key)
        return ids[self.done * 3 :], records[self.done :]


class Dispatch:
    """The frames of every stage: queued, or held by a worker."""

    def __init__(
        self,
        ctx: zmq.Context[Any],
        stages: int,
        credit: int,
        secret: bytes,
        keys: Keys | None = None,
    ) -> None:
        self.ctx = ctx
        self.keys = keys
        self.credit = credit
        self.secret = secret
        self.queues: list[deque[Frame]] = [deque() for _ in range(stages)]
        self.slotted: list[dict[int, deque[Frame]]] = [{} for _ in range(stages)]
        self.held: dict[str, dict[int, Frame]] = {}
        self._takers: list[list[Member]] = [[] for _ in range(stages)]
        self._push: dict[str, zmq.Socket[bytes]] = {}
        self._ids = itertools.count(1)
        #: Frames sent to each stage's workers, redeliveries included.
        self.sent = [0] * stages

    def join(self, member: Member) -> None:
        """Start sending frames to ``member``, which registered and is ready."""
        sock: zmq.Socket[bytes] = self.ctx.socket(zmq.PUSH)
        sock.setsockopt(zmq.SNDHWM, 0)  # bounded by credit instead
        if member.public is not None and self.keys is not None:
            self.keys.connect(sock, server_public=member.public)
        sock.connect(member.address or "")
        self._push[member.key] = sock
        self.held[member.key] = {}
        self._takers[member.stage].append(member)

    def withhold(self, member: Member) -> None:
        """Send ``member`` nothing more (it is being scaled down); it keeps what it holds."""
        takers = self._takers[member.stage]
        if member in takers:
            takers.remove(member)

    def leave(self, member: Member, live: Callable[[int], bool]) -> int:
        """Forget a lost member; queue again what it held of roots still ``live``.

        Returns the number of records queued again. Records of roots that are done, or were
        set aside (a poison record), are dropped instead of being sent round again.
        """
        self.withhold(member)
        sock = self._push.pop(member.key, None)
        if sock is not None:
            sock.close(linger=0)
        frames = self.held.pop(member.key, {})
        again = 0
        for frame in sorted(frames.values(), key=lambda f: f.fid, reverse=True):
            frame.holder = None
            ids, records = frame.remaining(self.secret)
            keep = [i for i in range(len(records)) if live(ids[i * 3])]
            if not keep:
                continue
            if frame.done or len(keep) < len(records):
                kept_ids = [n for i in keep for n in ids[i * 3 : i * 3 + 3]]
                frame.parts = wire.encode_batch(kept_ids, [records[i] for i in keep], self.secret)
                frame.done = 0
            again += len(keep)
            self._queue_of(frame.stage, frame.slot).appendleft(frame)
        return again

    def submit(self, stage: int, parts: list[bytes], slot: int | None = None) -> None:
        """Queue a frame for ``stage``; for a keyed stage, for its worker ``slot`` only."""
        self._queue_of(stage, slot).append(Frame(next(self._ids), stage, parts, slot))

    def _queue_of(self, stage: int, slot: int | None) -> deque[Frame]:
        if slot is None:
            return self.queues[stage]
        return self.slotted[stage].setdefault(slot, deque())

    def reported(self, member: Member, fid: int, records: int) -> tuple[list[int], list[bytes]]:
        """The ids and records of frame ``fid`` that ``member`` reports it has processed."""
        frame = self.held.get(member.key, {}).get(fid)
        if frame is None:
            return [], []
        ids, kept = frame.remaining(self.secret)
        return ids[: records * 3], kept[:records]

    def requeue(self, stage: int, parts: list[bytes], slot: int | None) -> None:
        """Queue a frame for ``stage`` ahead of every other: records to be processed again."""
        self._queue_of(stage, slot).appendleft(Frame(next(self._ids), stage, parts, slot))

    def holds(self, member: Member) -> int:
        return len(self.held.get(member.key, ()))

    def frames_of(self, member: Member) -> list[Frame]:
        return list(self.held.get(member.key, {}).values())

    def starving(self, stage: int) -> bool:
        """Whether a worker of ``stage`` holds no frame while none is queued for the stage."""
        if self.queues[stage]:
            return False
        return any(not self.held[member.key] for member in self._takers[stage])

    def queued(self, stage: int) -> int:
        return len(self.queues[stage]) + sum(len(q) for q in self.slotted[stage].values())

    def pump(self) -> None:
        """Send queued frames to every worker that has credit left."""
        for stage, slotted in enumerate(self.slotted):
            for member in self._takers[stage] if slotted else ():
                queue = slotted.get(member.slot)
                while queue and len(self.held[member.key]) < self.credit:
                    self._send(member, queue.popleft())
        for stage, queue in enumerate(self.queues):
            if not queue:
                continue
            takers = self._takers[stage]
            while queue and takers:
                member = min(takers, key=self.holds)
                held = self.held[member.key]
                if len(held) >= self.credit:
                    break
                self._send(member, queue.popleft())
            # Rotate, so that equally loaded workers take turns from the first frame.
            if len(takers) > 1:
                takers.append(takers.pop(0))

    def _send(self, member: Member, frame: Frame) -> None:
        frame.holder = member
        self.sent[member.stage] += 1
        self.held[member.key][frame.fid] = frame
        self._push[member.key].send_multipart([frame.fid.to_bytes(8, "little"), *frame.parts])

    def progress(self, member: Member, fid: int, records: int, end: bool) -> bool:
        """Note ``member``'s report on frame ``fid``; False if it does not hold that frame."""
        held = self.held.get(member.key)
        frame = held.get(fid) if held is not None else None
        if held is None or frame is None:
            return False
        if end:
            del held[fid]
        else:
            frame.done += records
        return True

    def close(self) -> None:
        for sock in self._push.values():
            sock.close(linger=0)
        self._push.clear()
