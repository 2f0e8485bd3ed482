"""Snapshots of stateful workers: state that survives its worker.

A stateful stage with ``snapshot()`` and ``restore()`` sends its state after every
``snapshot_every`` records or ``snapshot_seconds`` (at a frame's end), and when asked because
it holds no frame. A snapshot covers exactly the records the worker reported before it, since
both travel on the same ordered control channel. Until then the coordinator holds back what
those records did (their acknowledgements, outputs and dead letters) and keeps the records
themselves: so no record completes on the strength of state that could still be lost. When a
snapshot arrives it is kept for the worker's slot and the held-back effects are applied; when
the worker dies instead, its effects are dropped, its replacement is given the slot's latest
snapshot before any frame, and the kept records are sent again: exactly the records processed
since that snapshot. Memory: the records since the last snapshot of each worker, at most
``snapshot_every`` plus a frame, or the in-flight window (the run stops feeding while they
are held back), and one snapshot per slot.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from stageflow.engine.membership import Member

__all__ = ["Effect", "Snapshots"]

#: What a worker's report on some records did: (dead letters, acknowledgements, output frames).
Effect = tuple[list[Any], bytes, list[bytes]]


@dataclass
class _Since:
    """What one worker has done since its last kept snapshot."""

    ids: list[int] = field(default_factory=list)
    records: list[bytes] = field(default_factory=list)
    effects: list[Effect] = field(default_factory=list)
    asked: bool = False


class Snapshots:
    """The latest snapshot of each stateful slot, and what each worker did since."""

    def __init__(self) -> None:
        self._state: dict[tuple[int, int], bytes] = {}
        self._since: dict[str, _Since] = {}
        self.taken = 0
        self.restored = 0

    def hold(self, member: Member, ids: list[int], records: list[bytes], effect: Effect) -> None:
        since = self._since.setdefault(member.key, _Since())
        since.ids += ids
        since.records += records
        since.effects.append(effect)

    def should_ask(self, member: Member) -> bool:
        """Whether to ask an idle worker for a snapshot (it holds work back; asked once)."""
        since = self._since.get(member.key)
        if since is None or not since.effects or since.asked:
            return False
        since.asked = True
        return True

    def kept(self, member: Member, state: bytes) -> list[Effect]:
        """Keep ``member``'s snapshot; return the effects it covers, to apply now."""
        self._state[(member.stage, member.slot)] = state
        self.taken += 1
        return self.released(member)

    def released(self, member: Member) -> list[Effect]:
        """Everything ``member`` held back, now covered (a snapshot, or its finish())."""
        since = self._since.pop(member.key, None)
        return since.effects if since is not None else []

    def lost(self, member: Member) -> tuple[list[int], list[bytes]]:
        """``member`` died: drop its held-back effects; the records to process again."""
        since = self._since.pop(member.key, None)
        return (since.ids, since.records) if since is not None else ([], [])

    def state_of(self, member: Member) -> bytes | None:
        """The snapshot the worker of ``member``'s slot last had, for its replacement."""
        return self._state.get((member.stage, member.slot))
