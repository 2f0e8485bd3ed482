"""Following each input record until everything it turned into has been written.

Every record on the wire carries a 63-bit tag. The tracker keeps, per input record ("root"),
the XOR of the tags of its descendants that are still alive. A worker that finishes a record
acknowledges ``tag_in ^ tag_child_1 ^ ... ^ tag_child_k``; the coordinator XORs each result's
tag in when it receives the result. The value returns to zero exactly when every descendant
has been both created and consumed, in whatever order those reports arrive (the scheme Apache
Storm's acker uses), so one integer per root is enough.

The children's tags are random but for the last, which the worker makes
``tag_in ^ tag_child_1 ^ ... ^ tag_child_k-1``: the acknowledgement is then zero, changes
nothing, and is not sent. So only a record that leaves no child (filtered, dead-lettered) is
acknowledged, and a stage that maps or fans out costs the coordinator nothing per record but
its results. Each tag is still uniformly random, and the XOR of live descendants can only be
zero once none is left: a set of live records whose families are all complete XORs to their
parents', and a set with an incomplete family includes a random tag that nothing cancels.

The pipeline's results need no tags of their own: nothing consumes them after the tracker,
which takes a message's results in order. So the last stage gives a record's last result the
record's tag and the others 0; the root's value then moves once per record, on its last
result, which is what XOR-ing random tags that cancel out would have done in more steps.

A root that must be delivered again (its worker died) gets a new attempt with a fresh tag,
while the older attempts stay tracked: whichever attempt completes first wins, its results
are handed out once, and everything the others produce afterwards is ignored. So a redelivery
never throws away progress, and results stay exactly-once.
"""

from __future__ import annotations

import os
import random
from collections import deque
from collections.abc import Iterable, Iterator
from itertools import chain, compress
from typing import Any

__all__ = ["Root", "Tracker"]


class _Attempt:
    """What one redelivery of a root has produced so far."""

    __slots__ = ("dead", "results", "value")

    def __init__(self, tag: int) -> None:
        self.value = tag
        self.results: list[bytes] = []
        self.dead: list[dict[str, Any]] = []


class Root:
    """One input record in flight, or completed with its outcome.

    The first delivery's state lives in the root itself, and its lists are made only when
    needed: roots are made once per input record, and every extra object per record is
    work for the allocator and the garbage collector. Redeliveries, which are rare, get an
    :class:`_Attempt` each.
    """

    __slots__ = (
        "attempt",
        "dead",
        "deaths",
        "record",
        "results",
        "retries",
        "seq",
        "stage",
        "tag",
        "value",
    )

    def __init__(self, seq: int, record: bytes, stage: int, tag: int) -> None:
        self.seq = seq
        self.record = record
        self.stage = stage
        self.attempt = 0  # the latest attempt, the one to send
        self.tag = tag  # the latest attempt's tag
        self.value = tag  # the first attempt's XOR of live descendants
        self.results: list[bytes] | None = None
        self.dead: list[dict[str, Any]] | None = None
        self.retries: dict[int, _Attempt] | None = None
        self.deaths = 0

    def live_attempt(self, attempt: int) -> bool:
        return attempt == 0 or (self.retries is not None and attempt in self.retries)


class Tracker:
    """Roots in flight, and the ones completed but not yet handed out."""

    def __init__(self) -> None:
        self.roots: dict[int, Root] = {}
        self.completed: deque[Root] = deque()
        #: ``new_tag(63)``: a fresh random tag, for a new root or a new attempt.
        self.new_tag = random.Random(os.urandom(16)).getrandbits

    def __len__(self) -> int:
        return len(self.roots)

    def add(self, seq: int, record: bytes, stage: int = 0) -> Root:
        root = Root(seq, record, stage, self.new_tag(63))
        self.roots[seq] = root
        return root

    def redeliver(self, root: Root) -> None:
        """Open a new attempt for ``root``; send it with ``root.attempt`` and ``root.tag``."""
        root.attempt += 1
        root.tag = self.new_tag(63)
        if root.retries is None:
            root.retries = {}
        root.retries[root.attempt] = _Attempt(root.tag)

    def ack(self, acks: list[int]) -> None:
        """Apply a worker's flat [root, attempt, xor, ...] acknowledgements."""
        roots = self.roots
        for seq, attempt, xor in zip(acks[::3], acks[1::3], acks[2::3], strict=True):
            root = roots.get(seq)
            if root is None:
                continue
            if attempt == 0:
                root.value ^= xor
                if not root.value:
                    self._complete(root, root.results, root.dead)
            else:
                self._ack_retry(root, attempt, xor, None)

    def results(self, ids: list[int], records: list[bytes]) -> None:
        """Take the pipeline's results; they count once their attempt completes.

        A record's results come together, and all but the last are tagged 0
        (:meth:`stageflow.engine.runner.StageRunner._tag_results`): so the frame is taken a
        record's results at a time, each run of them ending at a tag, and a root's value moves
        once per record rather than once per result. Results a worker tagged one by one are
        runs of one.
        """
        if len(ids) != 3 * len(records):
            raise ValueError(f"{len(records)} results with {len(ids)} ids")
        if any(ids[1::3]):  # some of a redelivered root's: one by one
            self._results_one_by_one(ids, records)
            return
        roots, completed = self.roots, self.completed
        seqs, tags = ids[0::3], ids[2::3]
        ends: Iterable[int] = compress(range(len(tags)), tags)
        if tags and not tags[-1]:
            # A record whose last results are in the message's next frame: taken as a run
            # ending in a 0, which leaves its root's value as it was.
            ends = chain(ends, (len(tags) - 1,))
        start = 0
        for end in ends:
            root = roots.get(seqs[end])
            if root is not None:
                if root.results is None:
                    root.results = records[start : end + 1]
                else:
                    root.results += records[start : end + 1]
                root.value ^= tags[end]
                if not root.value:  # _complete, inlined: once per input record
                    del roots[root.seq]
                    root.retries = None
                    completed.append(root)
            start = end + 1

    def _results_one_by_one(self, ids: list[int], records: list[bytes]) -> None:
        roots, completed = self.roots, self.completed
        for seq, attempt, tag, record in zip(ids[::3], ids[1::3], ids[2::3], records, strict=True):
            root = roots.get(seq)
            if root is None:
                continue
            if attempt == 0:
                if root.results is None:
                    root.results = [record]
                else:
                    root.results.append(record)
                root.value ^= tag
                if not root.value:
                    del roots[seq]
                    root.retries = None
                    completed.append(root)
            else:
                self._ack_retry(root, attempt, tag, record)

    def _ack_retry(self, root: Root, number: int, xor: int, record: bytes | None) -> None:
        attempt = root.retries.get(number) if root.retries is not None else None
        if attempt is None:
            return
        if record is not None:
            attempt.results.append(record)
        attempt.value ^= xor
        if not attempt.value:
            self._complete(root, attempt.results, attempt.dead)

    def dead(self, seq: int, number: int, entry: dict[str, Any]) -> None:
        root = self.roots.get(seq)
        if root is None:
            return
        if number == 0:
            if root.dead is None:
                root.dead = []
            root.dead.append(entry)
            return
        attempt = root.retries.get(number) if root.retries is not None else None
        if attempt is not None:
            attempt.dead.append(entry)

    def give_up(self, root: Root, entry: dict[str, Any]) -> None:
        """Dead-letter a whole root (poison) and complete it without results."""
        self._complete(root, None, [entry])

    def _complete(
        self, root: Root, results: list[bytes] | None, dead: list[dict[str, Any]] | None
    ) -> None:
        del self.roots[root.seq]
        root.results = results
        root.dead = dead
        root.retries = None
        self.completed.append(root)

    def take_completed(self) -> Iterator[Root]:
        completed = self.completed
        while completed:
            yield completed.popleft()
