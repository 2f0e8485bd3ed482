"""Following each input record until everything it turned into has been written.

Every record on the wire carries a random 63-bit tag. The tracker keeps, per input record
("root"), the XOR of the tags of its descendants that are still alive. A worker that
finishes a record sends ``tag_in ^ tag_child_1 ^ ... ^ tag_child_k``; the coordinator XORs
each result's tag in when it receives the result. The value returns to zero exactly when
every descendant has been both created and consumed, in whatever order those reports
arrive (the scheme Apache Storm's acker uses), so one integer per root is enough.

A root that must be delivered again (its worker died) gets a new attempt; reports that
carry an older attempt are ignored, and its buffered results are dropped, which is what
keeps results exactly-once.
"""

from __future__ import annotations

import os
import random
from collections import deque
from collections.abc import Iterator
from typing import Any

__all__ = ["Root", "Tracker"]


class Root:
    """One input record in flight."""

    __slots__ = ("seq", "record", "stage", "attempt", "value", "results", "dead", "deaths")

    def __init__(self, seq: int, record: bytes, stage: int) -> None:
        self.seq = seq
        self.record = record
        self.stage = stage
        self.attempt = 0
        self.value = 0
        self.results: list[bytes] = []
        self.dead: list[dict[str, Any]] = []
        self.deaths = 0


class Tracker:
    """Roots in flight, and the ones completed but not yet handed out."""

    def __init__(self) -> None:
        self.roots: dict[int, Root] = {}
        self.completed: deque[Root] = deque()
        self._tags = random.Random(os.urandom(16)).getrandbits

    def __len__(self) -> int:
        return len(self.roots)

    def add(self, seq: int, record: bytes, stage: int = 0) -> Root:
        root = Root(seq, record, stage)
        root.value = self._tags(63)
        self.roots[seq] = root
        return root

    def redeliver(self, root: Root) -> None:
        """Start a new attempt: forget what the old one produced."""
        root.attempt += 1
        root.value = self._tags(63)
        root.results.clear()
        root.dead.clear()

    def ack(self, acks: list[int]) -> None:
        """Apply a worker's flat [root, attempt, xor, ...] acknowledgements."""
        roots = self.roots
        for index in range(0, len(acks), 3):
            root = roots.get(acks[index])
            if root is None or root.attempt != acks[index + 1]:
                continue
            root.value ^= acks[index + 2]
            if not root.value:
                self._complete(root)

    def results(self, ids: list[int], records: list[bytes]) -> None:
        """Take the last stage's outputs; they count once their root completes."""
        roots = self.roots
        for index, record in enumerate(records):
            base = index * 3
            root = roots.get(ids[base])
            if root is None or root.attempt != ids[base + 1]:
                continue
            root.results.append(record)
            root.value ^= ids[base + 2]
            if not root.value:
                self._complete(root)

    def dead(self, seq: int, attempt: int, entry: dict[str, Any]) -> None:
        root = self.roots.get(seq)
        if root is not None and root.attempt == attempt:
            root.dead.append(entry)

    def give_up(self, root: Root, entry: dict[str, Any]) -> None:
        """Dead-letter a whole root (poison) and complete it without its results."""
        root.results.clear()
        root.dead.append(entry)
        self._complete(root)

    def _complete(self, root: Root) -> None:
        del self.roots[root.seq]
        self.completed.append(root)

    def take_completed(self) -> Iterator[Root]:
        completed = self.completed
        while completed:
            yield completed.popleft()
