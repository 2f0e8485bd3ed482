"""The entry of a stateful stage: every input record's records are taken in once.

An input record ("root") may travel the pipeline more than once: a record stuck in one
worker is given to its peers under a new attempt, and whichever attempt completes first
wins. A stateless stage may process both attempts (the loser's results are dropped), but a
stateful one would count the record twice in what its ``finish()`` returns. So the
coordinator, which sees every frame entering a stage, lets into a stateful stage only the
records of the first attempt of each root that reached it, and nothing of a root that is
already complete. The records of that attempt itself are never sent twice: a lost worker's
unreported records are queued again as they were, and a worker reports its outputs in the
same message as the records that made them.

Memory: one entry per root that reached the stage and is not yet complete, forgotten when
it completes, so at most ``max_in_flight`` entries (plus the few ``finish()`` outputs of an
upstream stage in flight), whatever the length of the input.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

__all__ = ["Admission"]


class Admission:
    """For each stateful stage, the attempt of each live root it has taken in."""

    def __init__(self, stateful: Sequence[bool]) -> None:
        self._taken: list[dict[int, int] | None] = [{} if s else None for s in stateful]
        #: Records kept out of a stateful stage: they had entered it under another attempt.
        self.refused = 0

    def guards(self, stage: int) -> bool:
        return self._taken[stage] is not None

    def admit(
        self, stage: int, ids: list[int], records: list[bytes], live: Callable[[int], bool]
    ) -> tuple[list[int], list[bytes]]:
        """The ids and records of a frame for ``stage`` that it has not taken in before."""
        taken = self._taken[stage]
        if taken is None:
            return ids, records
        seqs, attempts = ids[::3], ids[1::3]
        # The common frame, checked at C speed: first attempts of live roots, none of which
        # entered under another attempt (taken.get gives 0 or None for those).
        if not any(attempts) and all(map(live, seqs)) and not any(map(taken.get, seqs)):
            taken.update(dict.fromkeys(seqs, 0))
            return ids, records
        kept_ids: list[int] = []
        kept: list[bytes] = []
        for index, record in enumerate(records):
            seq, attempt = ids[index * 3], ids[index * 3 + 1]
            if live(seq) and taken.setdefault(seq, attempt) == attempt:
                kept_ids += ids[index * 3 : index * 3 + 3]
                kept.append(record)
            else:
                self.refused += 1
        return kept_ids, kept

    def forget(self, seq: int) -> None:
        """``seq`` is complete: nothing of it may enter again, and its entry goes."""
        for taken in self._taken:
            if taken is not None:
                taken.pop(seq, None)
