"""Progress in a notebook (or any script): the live rich display, drawn while a run iterates.

    run = pipeline.run(items)
    show_progress(run)          # before iterating; rich draws in Jupyter and terminals
    results = list(run)

The display follows ``run.progress()`` snapshots through ``run.on_progress``, so it is
redrawn between two turns of the engine's loop in the iterating thread, and shows the
final numbers when the run ends.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from stageflow.observe.progress import LiveDisplay
from stageflow.observe.snapshot import Progress

if TYPE_CHECKING:
    from rich.console import Console

    from stageflow.engine.run import Run

__all__ = ["show_progress"]


def show_progress(run: Run, console: Console | None = None) -> LiveDisplay:
    """Draw ``run``'s progress with rich until it ends; returns the display."""
    from rich.console import Console

    display = LiveDisplay(console if console is not None else Console())
    started = False

    def update(progress: Progress) -> None:
        nonlocal started
        if not started:
            display.start()
            started = True
        display(progress)
        if progress.ended:
            display.stop()

    run.on_progress(update)
    return display
