"""The watching side of ``stageflow run``: progress display, metrics, stalls, the report.

``stageflow run`` builds one :class:`Observation` from its arguments before the run,
attaches it to the run, and closes it with the exit status whatever the ending; this
module decides what to show where, and :mod:`stageflow.observe` does the showing.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import stat
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING

from stageflow.observe.metrics import Metrics, MetricsError
from stageflow.observe.progress import InputGauge, LiveDisplay, ProgressLine
from stageflow.observe.stall import STALL_AFTER, StallWatch

if TYPE_CHECKING:
    from stageflow.engine.run import Run

__all__ = ["MetricsError", "Observation", "add_arguments"]

#: Seconds between two plain progress lines when stderr is not a terminal.
LINE_EVERY = 10.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="force the live progress display on stderr (--progress) or the plain progress "
        "line in the log (--no-progress); by default live when stderr is a terminal",
    )
    parser.add_argument(
        "--progress-interval",
        type=_seconds,
        default=LINE_EVERY,
        metavar="SECONDS",
        help=f"seconds between two plain progress lines ({LINE_EVERY:.0f})",
    )
    parser.add_argument(
        "--stall-after",
        type=_seconds,
        default=STALL_AFTER,
        metavar="SECONDS",
        help="warn, naming the stage and workers holding the work, after this long without "
        f"progress ({STALL_AFTER:.0f})",
    )
    parser.add_argument(
        "--metrics",
        metavar="ADDRESS",
        help="serve Prometheus metrics on http://ADDRESS/metrics, e.g. 127.0.0.1:0 (a port "
        "alone means loopback; 0 picks a free port)",
    )
    parser.add_argument(
        "--report",
        metavar="FILE",
        help="write the run report (JSON, format stageflow-run-report/1) to FILE at the end "
        "of the run, however it ends",
    )


def _seconds(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number of seconds")
    return value


class Observation:
    """What one ``stageflow run`` shows and writes about itself.

    Raises :class:`~stageflow.observe.metrics.MetricsError` when ``--metrics`` cannot be
    served, or ValueError when ``--report`` names no regular file in a writable directory,
    before anything starts.
    """

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.report_path = Path(args.report) if args.report else None
        if self.report_path is not None:
            _check_report_path(self.report_path)
        self.metrics = Metrics(args.metrics) if args.metrics else None
        if self.metrics is not None:
            print(f"stageflow: metrics at {self.metrics.url}", file=sys.stderr, flush=True)
        self.latency = self.metrics is not None or self.report_path is not None
        self._run: Run | None = None
        self._display: LiveDisplay | None = None

    def attach(self, the_run: Run, source: IO[bytes], output: IO[bytes]) -> None:
        """Show ``the_run``'s progress as the arguments and the terminals say."""
        self._run = the_run
        stalls = StallWatch(self.args.stall_after)
        the_run.on_progress(stalls, every=min(1.0, self.args.stall_after / 4))
        if getattr(self.args, "quiet", False):
            return
        gauge = _gauge(source)
        shares = _shares_terminal(output)
        live = self.args.progress if self.args.progress is not None else sys.stderr.isatty()
        if live and not shares:
            from rich.console import Console

            console = Console(file=sys.stderr, force_terminal=True if self.args.progress else None)
            self._display = LiveDisplay(console, gauge, stalls)
            self._display.start()
            the_run.on_progress(self._display)
        else:
            # Results on the same terminal: a plain line between two whole results, never
            # a display redrawn through them.
            before: Callable[[], None] | None = output.flush if shares else None
            the_run.on_progress(ProgressLine(gauge, before), every=self.args.progress_interval)

    def close(self, status: int | None) -> str | None:
        """Stop the display and the metrics, write the report; return an error, if any."""
        if self._display is not None:
            self._display.stop()
        if self.metrics is not None:
            self.metrics.close()
        if self._run is None or self.report_path is None:
            return None
        report = self._run.report
        report.exit_status = status
        try:
            _write_atomically(self.report_path, report.to_json())
        except OSError as exc:
            return f"cannot write the report to {str(self.report_path)!r}: {exc.strerror or exc}"
        return None


def _check_report_path(path: Path) -> None:
    # The report is written by a rename at the very end: anything that would make that fail
    # (or, for a device or a link, replace it) is refused before the run starts.
    if not path.parent.is_dir():
        raise ValueError(f"cannot write the report to {str(path)!r}: its directory does not exist")
    if os.path.lexists(path) and not (path.is_file() and not path.is_symlink()):
        raise ValueError(
            f"cannot write the report to {str(path)!r}: it exists and is not a regular file; "
            "give the path of a file"
        )
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise ValueError(f"cannot write the report to {str(path)!r}: its directory is not writable")


def _gauge(source: IO[bytes]) -> InputGauge | None:
    try:
        info = os.fstat(source.fileno())
    except (OSError, ValueError):
        return None
    if not stat.S_ISREG(info.st_mode):
        return None
    return InputGauge(info.st_size, source.tell)


def _shares_terminal(output: IO[bytes]) -> bool:
    """Whether results go to the very terminal stderr is on."""
    try:
        if not (os.isatty(output.fileno()) and sys.stderr.isatty()):
            return False
        return os.fstat(output.fileno()).st_rdev == os.fstat(sys.stderr.fileno()).st_rdev
    except (OSError, ValueError):
        return False


def _write_atomically(path: Path, text: str) -> None:
    # A reader (a CI step, a dashboard) never sees half a report.
    # Not mkstemp, whose file is private (0600): a report is as readable as any other file
    # the user writes, so the umask decides its mode.
    temporary = str(path.parent / f".{path.name}.{secrets.token_hex(6)}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
