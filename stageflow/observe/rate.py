"""A moving rate: records per second over the last few seconds of snapshots."""

from __future__ import annotations

from collections import deque

__all__ = ["MovingRate"]


class MovingRate:
    """Change per second over a sliding ``window`` of (seconds, value) samples."""

    def __init__(self, window: float = 10.0) -> None:
        self.window = window
        self._samples: deque[tuple[float, float]] = deque()

    def add(self, at: float, count: float) -> float:
        """Add a sample taken at ``at`` seconds; return the rate over the window."""
        samples = self._samples
        samples.append((at, count))
        while len(samples) > 2 and at - samples[1][0] >= self.window:
            samples.popleft()
        first_at, first = samples[0]
        return (count - first) / (at - first_at) if at > first_at else 0.0
