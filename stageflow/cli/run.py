"""``stageflow run PIPELINE``: JSON Lines in, JSON Lines out, dead letters aside."""

from __future__ import annotations

import argparse
import codecs
import contextlib
import logging
import os
import signal
import stat
import sys
import threading
from collections.abc import Iterator
from typing import IO, TYPE_CHECKING, Any

from stageflow.cli import (
    EXIT_ENGINE,
    EXIT_INTERRUPTED,
    EXIT_INVALID,
    EXIT_OK,
    EXIT_RECORDS_FAILED,
    EXIT_STATE_LOST,
    fail,
    observe,
)
from stageflow.errors import EngineError, RecordsFailedError

if TYPE_CHECKING:
    from stageflow.engine.report import RunReport
    from stageflow.engine.run import Run

log = logging.getLogger("stageflow")



def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "run",
        help="run a pipeline over JSON Lines",
        description="Run PIPELINE over JSON Lines input (one record of the first stage's Input "
        "per line) and write the last stage's Outputs as JSON Lines. Records that fail go to "
        "the dead-letter output with their reason; the rest of the run goes on.",
    )
    parser.add_argument("pipeline", help="the pipeline YAML file")
    parser.add_argument(
        "-i", "--input", default="-", metavar="FILE", help="input JSON Lines file, or - for stdin"
    )
    parser.add_argument(
        "-o",
        "--output",
        default="-",
        metavar="FILE",
        help="output JSON Lines file, or - for stdout",
    )
    parser.add_argument(
        "--append",
        action="store_true",
        help="append to the --output file instead of replacing it (to resume a stopped run)",
    )
    parser.add_argument(
        "--dead-letter",
        metavar="PATH",
        help="write every record that could not be processed, with its reason, to this JSON "
        "Lines file",
    )
    parser.add_argument(
        "--max-errors",
        type=_non_negative,
        default=0,
        metavar="N",
        help="exit 0 even if up to N records were dead-lettered (default 0)",
    )
    parser.add_argument(
        "--skip",
        type=_non_negative,
        default=0,
        metavar="N",
        help="skip the first N input lines (to resume a stopped run)",
    )
    parser.add_argument(
        "--batch-size", type=_positive, default=256, metavar="N", help="records per frame (256)"
    )
    parser.add_argument(
        "--max-in-flight",
        type=_positive,
        default=8192,
        metavar="N",
        help="input records in flight at once; bounds memory (8192)",
    )
    parser.add_argument(
        "--heartbeat-timeout",
        type=_positive_float,
        default=10.0,
        metavar="S",
        help="seconds without a heartbeat before a worker counts as lost and is replaced (10)",
    )
    parser.add_argument(
        "--stuck-after",
        type=_positive_float,
        default=30.0,
        metavar="S",
        help="log a record that has been inside process() this long, again every S (30)",
    )
    parser.add_argument(
        "--stop-timeout",
        type=_positive_float,
        default=5.0,
        metavar="S",
        help="seconds a stopped run may take to end; records still inside process() by then "
        "are dead-lettered as Stopped (5)",
    )
    observe.add_arguments(parser)
    parser.set_defaults(func=run)


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is negative; give 0 or more")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not positive; give 1 or more")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number of seconds")
    return value


def run(args: argparse.Namespace) -> int:
    try:
        observation = observe.Observation(args)
    except (ValueError, observe.MetricsError) as exc:
        fail(str(exc))
        return EXIT_INVALID
    status: int | None = None
    try:
        status = _run(args, observation)
    except EngineError:
        status = EXIT_ENGINE
        raise
    except KeyboardInterrupt:
        status = EXIT_INTERRUPTED
        raise
    finally:
        problem = observation.close(status)
        if problem is not None:
            fail(problem)
    return status


def _run(args: argparse.Namespace, observation: observe.Observation) -> int:
    # Imported here so that the other commands never load the engine or ZeroMQ.
    from stageflow.engine.run import Run
    from stageflow.pipeline import Pipeline

    pipeline = Pipeline.from_file(args.pipeline)
    opened: list[IO[Any]] = []
    try:
        source = _open_input(args.input)
        opened.append(source)
        output = _open_output(args.output, append=args.append)
        opened.append(output)
        dead_letters = (
            open(args.dead_letter, "w", encoding="utf-8")  # noqa: SIM115 - closed after the run
            if args.dead_letter
            else None
        )
    except OSError as exc:
        for handle in opened:
            if handle not in (sys.stdin.buffer, sys.stdout.buffer):
                handle.close()
        what = ("the input file", "the output file", "the dead-letter file")[len(opened)]
        fix = "check the path" if not opened else "check that its folder exists and is writable"
        fail(f"cannot open {what} {exc.filename!r}: {exc.strerror}; {fix}")
        return EXIT_INVALID
    the_run = Run(
        pipeline,
        _lines(source, args.skip),
        dead_letter=dead_letters,
        max_errors=args.max_errors,
        numbered=True,
        # A pipe or a terminal may pause; read it in a thread so results keep flowing.
        read_ahead=not _is_regular_file(source),
        batch_size=args.batch_size,
        max_in_flight=args.max_in_flight,
        heartbeat_timeout=args.heartbeat_timeout,
        stuck_after=args.stuck_after,
        stop_timeout=args.stop_timeout,
        log_level=logging.getLogger().getEffectiveLevel(),
        metrics=observation.metrics,
        latency=observation.latency,
    )
    observation.attach(the_run, source, output)
    signals = _GracefulStop(the_run)
    status = EXIT_OK
    engine_error: EngineError | None = None
    try:
        write = output.write
        # Flushed whenever the run is about to wait: a downstream reader sees each result
        # as soon as nothing else is ready, without a flush per line while busy.
        for line in the_run.lines(on_idle=output.flush):
            write(line)
            write(b"\n")
    except RecordsFailedError as exc:
        fail(str(exc))
        status = EXIT_RECORDS_FAILED
    except KeyboardInterrupt:
        fail("stopped at once on a second signal; records in flight were abandoned")
        return EXIT_INTERRUPTED
    except EngineError as exc:
        engine_error = exc
    finally:
        signals.restore()
        with contextlib.suppress(BrokenPipeError):  # the reader left, e.g. `| head`
            output.flush()
        if output is not sys.stdout.buffer:
            output.close()
        if source is not sys.stdin.buffer:
            source.close()
        if dead_letters is not None:
            dead_letters.close()
    report = the_run.report
    log.info("%s", report.summary())
    if engine_error is not None:
        report.error = str(engine_error)
        fail(report.error)
        if report.records_in:
            fail(_resume_after_failure(report, args.output != "-"))
        return EXIT_ENGINE
    if report.interrupted:
        resume = f"--skip {report.last_line_read}"
        if args.output != "-":
            resume += " --append"
        report.resume_hint = resume
        fail(
            f"stopped early: the first {report.last_line_read} input lines are fully processed; "
            f"resume with {resume}"
        )
        return EXIT_INTERRUPTED
    if report.state_lost:
        return EXIT_STATE_LOST  # the engine logged the loss, one line per lost worker
    return status


def _resume_after_failure(report: RunReport, to_file: bool) -> str:
    """Where a run the engine could not finish may resume, said without pointing elsewhere."""
    done = report.complete_through
    resume = f"--skip {done}" + (" --append" if to_file else "")
    if not report.done_beyond:
        report.resume_hint = resume
        return f"the first {done} input lines are fully processed; resume with {resume}"
    return (
        f"the first {done} input lines are fully processed, and {report.done_beyond} later "
        f"ones too: resuming with {resume} would write the results of those "
        f"{report.done_beyond} again"
    )


class _GracefulStop:
    """First SIGINT/SIGTERM: stop reading and drain. Second: stop at once."""

    def __init__(self, the_run: Run) -> None:
        self.run = the_run
        self.count = 0
        self.previous: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self.previous[signum] = signal.signal(signum, self.handle)

    def handle(self, signum: int, frame: Any) -> None:
        self.count += 1
        if self.count == 1:
            log.warning(
                "received %s: finishing the records in flight; send it again to stop at once",
                signal.Signals(signum).name,
            )
            self.run.stop()
            return
        self.run.abort()
        raise KeyboardInterrupt

    def restore(self) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)


def _open_input(path: str) -> IO[bytes]:
    if path == "-":
        return sys.stdin.buffer
    return open(path, "rb")


def _open_output(path: str, append: bool) -> IO[bytes]:
    if path == "-":
        return sys.stdout.buffer
    return open(path, "ab" if append else "wb")


def _lines(source: IO[bytes], skip: int) -> Iterator[tuple[int, bytes]]:
    """Numbered non-blank lines, after skipping the first ``skip``.

    A UTF-8 byte order mark at the very start of the input (as some Windows editors write
    one) is not part of the first record.
    """
    for number, line in enumerate(source, 1):
        if number == 1:
            line = line.removeprefix(codecs.BOM_UTF8)
        if number <= skip:
            continue
        line = line.rstrip(b"\r\n")
        if line.strip():
            yield number, line


def _is_regular_file(source: IO[bytes]) -> bool:
    try:
        return stat.S_ISREG(os.fstat(source.fileno()).st_mode)
    except (OSError, ValueError):
        return True
