"""Hands progress snapshots to listeners at their own pace, from the run's own thread.

The coordinator calls :meth:`Watch.tick` once per turn of its loop; that costs a clock
read until a snapshot is due, so the watch never slows a busy run. Listeners (the live
display, the log line, the stall check) run in the coordinator's thread, between two
turns, so they never race with the engine; other threads (a metrics scrape, a notebook
widget) read :attr:`Watch.latest`, an immutable snapshot replaced as a whole.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from stageflow.observe.snapshot import Progress

__all__ = ["EVERY", "Watch"]

#: Seconds between two snapshots while anything is listening; the display's refresh rate.
EVERY = 0.25

Listener = Callable[[Progress], None]


@dataclass
class _Entry:
    listener: Listener
    every: float
    due: float = 0.0


class Watch:
    """Snapshots of one run, and who wants them how often."""

    def __init__(self) -> None:
        self.latest: Progress | None = None
        self.source: Callable[[], Progress] | None = None
        self._entries: list[_Entry] = []
        self._due = 0.0

    def add(self, listener: Listener, every: float = EVERY) -> None:
        """Call ``listener`` with a snapshot about every ``every`` seconds, and at the end."""
        self._entries.append(_Entry(listener, every, time.monotonic() + every))

    def tick(self) -> None:
        now = time.monotonic()
        if now < self._due or self.source is None:
            return
        self._due = now + EVERY
        self._publish(self.source(), now, final=False)

    def final(self, snapshot: Progress) -> None:
        """Publish the last snapshot, taken once the run ended, to every listener."""
        self._publish(replace(snapshot, ended=True), time.monotonic(), final=True)

    def _publish(self, snapshot: Progress, now: float, *, final: bool) -> None:
        self.latest = snapshot
        for entry in self._entries:
            if final or now >= entry.due:
                entry.due = now + entry.every
                entry.listener(snapshot)
