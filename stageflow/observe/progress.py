"""Showing a run's progress: a live rich display on a terminal, a plain line in a log.

Both are listeners of :class:`~stageflow.observe.watch.Watch`, so they run in the run's
own thread between two turns of the engine's loop. The live display redraws in place on
stderr (never on stdout, which may carry the results); the plain line is one log record,
with no escape codes, for a stderr that is a file or a pipe.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from stageflow.observe.rate import MovingRate
from stageflow.observe.snapshot import Progress
from stageflow.observe.stall import StallWatch

if TYPE_CHECKING:
    from rich.console import Console, RenderableType
    from rich.live import Live

__all__ = ["InputGauge", "LiveDisplay", "ProgressLine", "render_progress"]

log = logging.getLogger("stageflow.observe")


@dataclass(frozen=True)
class InputGauge:
    """How far through a regular input file the run has read: ``position()`` of ``size``."""

    size: int
    position: Callable[[], int]

    def fraction(self) -> float | None:
        if self.size <= 0:
            return None
        try:
            return min(1.0, self.position() / self.size)
        except (OSError, ValueError):  # the file was closed as the run ended
            return None


class _Figures:
    """What both displays show, worked out from successive snapshots."""

    def __init__(self, gauge: InputGauge | None) -> None:
        self.gauge = gauge
        self.rate = MovingRate()
        self.input_rate = MovingRate()
        self.records_per_second = 0.0
        self.fraction: float | None = None
        self.eta: float | None = None

    def update(self, progress: Progress) -> None:
        self.records_per_second = self.rate.add(progress.elapsed, progress.records_done)
        if progress.ended and progress.elapsed > 0:
            # The last line sums the run up: its average, which a run shorter than one
            # snapshot interval would otherwise show as 0 rec/s.
            self.records_per_second = progress.records_done / progress.elapsed
        self.fraction = self.gauge.fraction() if self.gauge is not None else None
        self.eta = None
        if self.fraction is not None:
            # From the recent reading speed, not the average: start-up time does not count.
            speed = self.input_rate.add(progress.elapsed, self.fraction)
            if speed > 0 and self.fraction < 1:
                self.eta = (1 - self.fraction) / speed


def _clock(seconds: float) -> str:
    whole = int(seconds)
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"


def _counts(progress: Progress, figures: _Figures) -> str:
    return " · ".join(
        [
            f"read {progress.records_in:,}",
            f"written {progress.results:,}",
            f"dead letters {progress.dead_lettered:,}",
            f"{figures.records_per_second:,.0f} rec/s",
            f"in flight {progress.in_flight:,}",
        ]
    )


def _timing(progress: Progress, figures: _Figures) -> str:
    parts = [f"elapsed {_clock(progress.elapsed)}"]
    if progress.worker_restarts:
        parts.append(f"restarts {progress.worker_restarts}")
    if figures.fraction is not None:
        parts.append(f"input {figures.fraction:.0%}")
    if figures.eta is not None:
        parts.append(f"ETA {_clock(figures.eta)}")
    return " · ".join(parts)


def _totals(progress: Progress, figures: _Figures) -> str:
    return f"{_counts(progress, figures)} · {_timing(progress, figures)}"


class ProgressLine:
    """Logs one plain line per call: the totals, then each stage in a few words."""

    def __init__(
        self,
        gauge: InputGauge | None = None,
        before: Callable[[], None] | None = None,
    ) -> None:
        self._figures = _Figures(gauge)
        self._before = before

    def __call__(self, progress: Progress) -> None:
        self._figures.update(progress)
        slowest = progress.slowest
        stages = [
            f"{stage.name} {stage.ready_workers}w {stage.processed:,} "
            f"busy {progress.busy_share(stage):.0%}"
            + (f" queued {stage.queued_frames}" if stage.queued_frames else "")
            + (" (slowest)" if stage is slowest and len(progress.stages) > 1 else "")
            for stage in progress.stages
        ]
        if self._before is not None:
            self._before()  # e.g. flush the results, so the line never lands inside one
        log.info("progress: %s | %s", _totals(progress, self._figures), " | ".join(stages))


#: Characters in the bar of how much of the input file was read.
_BAR = 40


def render_progress(
    progress: Progress, figures: Any = None, stall: str | None = None
) -> RenderableType:
    """The live display's picture of ``progress`` (a rich renderable).

    The stage table is laid out by hand as aligned lines of text: a rich ``Table`` costs
    about five times as much to draw, and the display redraws four times a second in the
    engine's own thread.
    """
    from rich.console import Group
    from rich.text import Text

    if figures is None:
        figures = _Figures(None)
        figures.update(progress)
    title = Text.assemble((progress.pipeline, "bold"), "  ", _timing(progress, figures))
    rows: list[RenderableType] = [title, Text(_counts(progress, figures))]
    if figures.fraction is not None:
        done = round(figures.fraction * _BAR)
        rows.append(Text.assemble(("━" * done, "bar.complete"), ("━" * (_BAR - done), "bar.back")))
    slowest = progress.slowest
    header = ("stage", "workers", "records", "busy", "queued")
    cells = [
        (
            stage.name,
            f"{stage.ready_workers}/{len(stage.workers)}",
            f"{stage.processed:,}",
            f"{progress.busy_share(stage):.0%}",
            str(stage.queued_frames),
        )
        for stage in progress.stages
    ]
    widths = [max(len(row[column]) for row in (header, *cells)) for column in range(5)]

    def line(row: tuple[str, ...]) -> str:
        first = row[0].ljust(widths[0])
        rest = "  ".join(cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True))
        return f"{first}  {rest}  "

    rows.append(Text(line(header).rstrip(), style="bold", no_wrap=True, overflow="crop"))
    for stage, row in zip(progress.stages, cells, strict=True):
        text = Text(line(row), no_wrap=True, overflow="crop")
        if stage is slowest:
            text.append("◀ slowest", style="bold yellow")
        if stage.dead_letters:
            text.append(f" ✗{stage.dead_letters}", style="red")
        rows.append(text)
    if stall:
        rows.append(Text(stall, style="bold red"))
    return Group(*rows)


class LiveDisplay:
    """A rich ``Live`` view on stderr, redrawn by each snapshot; log lines print above it."""

    def __init__(
        self,
        console: Console,
        gauge: InputGauge | None = None,
        stalls: StallWatch | None = None,
    ) -> None:
        from rich.live import Live

        self.console = console
        self._figures = _Figures(gauge)
        self._stalls = stalls
        self._live: Live = Live(console=console, auto_refresh=False, transient=False)
        self._handlers: list[tuple[logging.StreamHandler[Any], Any]] = []
        #: What the display shows now (a rich renderable), e.g. to print it elsewhere.
        self.picture: RenderableType | None = None

    def start(self) -> None:
        self._live.start()
        # Log records go through the live console, which prints them above the display
        # instead of letting them tear through it.
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.StreamHandler):
                self._handlers.append((handler, handler.stream))
                handler.setStream(_ConsoleStream(self.console))

    def __call__(self, progress: Progress) -> None:
        self._figures.update(progress)
        stall = self._stalls.stall if self._stalls is not None else None
        self.picture = render_progress(progress, self._figures, stall.message if stall else None)
        self._live.update(self.picture, refresh=True)

    def stop(self) -> None:
        self._live.stop()
        for handler, stream in self._handlers:
            handler.setStream(stream)
        self._handlers.clear()


class _ConsoleStream:
    """A file-like object whose lines rich prints above the live display."""

    def __init__(self, console: Console) -> None:
        self._console = console

    def write(self, text: str) -> int:
        if text.strip():
            self._console.print(text.rstrip("\n"), markup=False, highlight=False)
        return len(text)

    def flush(self) -> None:
        pass
