"""Input into frames: admitting records into the in-flight window, and where input is done.

The feeder takes what the input source has ready, as far as ``max_in_flight`` allows, makes
each record a root of the tracker and queues it, in frames of a fair size, for the first
stage; the outputs of a stage's ``finish()`` enter the next stage the same way. It also keeps
the order input lines were fed in, so the report can say up to which line everything is
done, even when records complete out of order.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator
from itertools import chain, islice, repeat, takewhile
from operator import attrgetter
from typing import Any

from stageflow.engine.report import RunReport
from stageflow.engine.runner import RAISE_LIMIT, dead_letter
from stageflow.engine.tracker import Root, Tracker
from stageflow.observe.latency import LatencyRecorder
from stageflow.pipeline import Pipeline

__all__ = ["WAIT", "Feeder"]

#: Yielded by an input source that has nothing ready yet (e.g. a slow stdin).
WAIT = object()

#: Longest time one feeding round waits on a slow input iterator before results get their
#: turn; keeps latency low when input trickles in.
_FEED_FOR = 0.005
#: Records read between two looks at that clock.
_CLOCK_EVERY = 16
#: A root's record, and its ids in a frame.
_RECORD = attrgetter("record")
_IDS = attrgetter("seq", "attempt", "tag")
#: Records in a run's very first frame, sent ahead of the rest: the first results then come
#: out after a few records' work through every stage, not after a whole frame's.
FIRST_FRAME = 16


class Feeder:
    """Turns input records (and finish() outputs) into tracked roots in queued frames."""

    def __init__(
        self,
        pipeline: Pipeline,
        units: int,
        tracker: Tracker,
        report: RunReport,
        enter: Callable[[int, list[int], list[bytes]], None],
        workers: Callable[[int], int],
        starving: Callable[[int], bool],
        secret: bytes,
        *,
        batch_size: int,
        max_in_flight: int,
        credit: int,
        frame_bytes: int,
    ) -> None:
        self.pipeline = pipeline
        self.units = units  # how many plan units run the pipeline's stages
        self.tracker = tracker
        self.report = report
        self.enter = enter  # queues a frame's ids and records for a stage
        self.workers = workers
        self.starving = starving  # whether a worker of the stage holds nothing to do
        self.secret = secret
        self.batch_size = batch_size
        self.max_in_flight = max_in_flight
        self.credit = credit
        self.frame_bytes = frame_bytes
        self.latency: LatencyRecorder | None = None
        self._next_synthetic = -1
        # Input lines in the order they were fed, and those done out of order.
        self._fed: deque[int] = deque()
        self._done_ahead: set[int] = set()
        #: Roots read but held back, less than a frame's worth, until more input fills
        #: their frame or a worker of the first stage has nothing else to do.
        self.forming: list[Root] = []
        self._begun = False  # the first frame has gone

    def feed(self, source: Iterator[Any]) -> tuple[bool, bool]:
        """Queue what the in-flight window allows.

        Returns (exhausted, more): whether the source has ended, and whether it may have
        more ready right now (so the loop should not wait).
        """
        room = self.max_in_flight - len(self.tracker.roots)
        workers = max(1, self.workers(0))
        # Once the window is full, records complete a few at a time: admitting each few at
        # once would cut the input into frames of a few records, and every frame costs a
        # hop through every worker and the coordinator. Wait for room for full frames
        # instead (at most half the window, so the pipeline never runs dry meanwhile).
        if room <= 0 or room < min(self.batch_size * workers, self.max_in_flight // 2):
            self.release(whole=False)
            return False, False
        chunk = min(room, self.batch_size * workers * self.credit)
        taken = self.forming
        held = len(taken)
        more = True
        clock = time.monotonic
        until = clock() + _FEED_FOR
        fed = self._fed
        tracker = self.tracker
        roots, tag = tracker.roots, tracker.new_tag
        limit = self.frame_bytes
        read = 0
        cut = False  # stopped early: by the clock, or by a source with nothing ready
        # In blocks between two looks at the clock (one per record would cost more than the
        # record's bookkeeping), each block's roots made and filed at C speed: this runs
        # once per input record.
        while read < chunk:
            wanted = min(_CLOCK_EVERY, chunk - read)
            block = list(islice(source, wanted))
            if WAIT in block:
                del block[block.index(WAIT) :]
                more, cut = False, True
            if block:
                seqs, records = zip(*block, strict=True)
                made = list(map(Root, seqs, records, repeat(0), map(tag, repeat(63, len(seqs)))))
                roots.update(zip(seqs, made, strict=True))
                fed.extend(seqs)
                read += len(seqs)
                if max(map(len, records)) > limit:
                    for root in made:
                        if len(root.record) > limit:
                            tracker.give_up(root, self._too_large(root.seq, root.record))
                    made = [root for root in made if root.seq in roots]
                taken += made
            if cut or len(block) < wanted:
                break  # nothing ready, or the source ended
            if clock() > until:
                cut = True
                break
        exhausted = not cut and read < chunk
        if read:
            self.report.records_in += read
            self.report.last_line_read = fed[-1]
        if self.latency is not None and read:
            self.latency.read(taken[held:])
        self.release(whole=exhausted or not more)
        return exhausted, more and not exhausted and read < room

    def release(self, whole: bool = True) -> None:
        """Queue the roots read so far, in frames for the first stage.

        Unless ``whole`` (the input ended, or has nothing ready), a last frame short of
        ``batch_size`` is held back while every worker of the first stage still has a frame
        to work on: under load, input comes in bursts cut short by the clock, and sending
        each burst at once made frames of a few dozen records, each costing a hop through
        a worker and the coordinator.
        """
        taken = self.forming
        if not taken:
            return
        if not self._begun:
            self._begun = True
            first = min(FIRST_FRAME, self.batch_size)
            if len(taken) > first:
                self.send_roots(0, taken[:first], spread=False)
                taken = self.forming = taken[first:]
        if whole or (len(taken) < self.batch_size and self.starving(0)):
            self.forming = []
            self.send_roots(0, taken)
            return
        full = len(taken) - len(taken) % self.batch_size
        if full:
            self.forming = taken[full:]
            self.send_roots(0, taken[:full], spread=False)

    def _too_large(self, seq: int, record: bytes) -> dict[str, Any]:
        return dead_letter(
            seq,
            self.pipeline.stages[0].name,
            "RecordTooLarge",
            f"the record is {len(record)} bytes, more than the {self.frame_bytes}-byte limit "
            f"of one frame; raise {RAISE_LIMIT}",
            record,
        )

    def send_roots(self, stage: int, roots: list[Root], spread: bool = True) -> None:
        """Queue roots for ``stage`` under their latest attempt, in frames under the record
        and byte limits; ``spread`` them over the stage's workers too, so that a small input
        still gets a fair share."""
        parts = max(1, min(self.workers(stage), len(roots))) if spread else 1
        size = min(-(-len(roots) // parts), self.batch_size)
        for start in range(0, len(roots), size):
            frame = roots[start : start + size]
            records = list(map(_RECORD, frame))
            if sum(map(len, records)) + len(records) <= self.frame_bytes:
                # The usual frame: under the byte limit, so made at C speed.
                self.enter(stage, list(chain.from_iterable(map(_IDS, frame))), records)
                continue
            ids: list[int] = []
            records = []
            used = 0
            for root in frame:
                if records and used + len(root.record) > self.frame_bytes:
                    self.enter(stage, ids, records)
                    ids, records, used = [], [], 0
                ids += (root.seq, root.attempt, root.tag)
                records.append(root.record)
                used += len(root.record) + 1
            self.enter(stage, ids, records)

    def inject(self, stage: int, records: list[bytes]) -> None:
        """Outputs of the previous unit's finish() enter unit ``stage`` as new roots."""
        if stage == self.units:
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

    def done_all(self, seqs: list[int]) -> None:
        """Input lines ``seqs`` are fully processed: move the report's resume point on, past
        every line fed before the first one not yet done."""
        if not seqs:
            return
        fed, ahead, report = self._fed, self._done_ahead, self.report
        ahead.update(seqs)
        # How far the lines fed first are all done, counted at C speed, then let go.
        through = len(list(takewhile(ahead.__contains__, fed)))
        if through:
            if through == len(fed):
                report.complete_through = fed[-1]
                ahead.difference_update(fed)
                fed.clear()
            else:
                report.complete_through = fed[through - 1]
                ahead.difference_update(islice(fed, through))
                for _ in repeat(None, through):
                    fed.popleft()
        report.done_beyond = len(ahead)

    def done(self, seq: int) -> None:
        """Input line ``seq`` is fully processed: move the report's resume point on."""
        self.done_all([seq])
