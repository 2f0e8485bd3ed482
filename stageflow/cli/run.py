"""``stageflow run PIPELINE``: JSON Lines in, JSON Lines out, dead letters aside."""

from __future__ import annotations

import argparse
import codecs
import gc
import logging
import os
import signal
import stat
import sys
import threading
from collections.abc import Iterator
from functools import partial
from itertools import chain, compress, count, islice, repeat
from typing import IO, TYPE_CHECKING, Any, cast

from stageflow._collector import starting
from stageflow.cli import (
    EXIT_BROKEN_PIPE,
    EXIT_ENGINE,
    EXIT_INTERRUPTED,
    EXIT_INVALID,
    EXIT_OK,
    EXIT_OUTPUT_FAILED,
    EXIT_RECORDS_FAILED,
    EXIT_STATE_LOST,
    fail,
    observe,
)
from stageflow.cli.output import OutputClosed, Outputs, OutputSetupError, SinkFailed
from stageflow.errors import EngineError, RecordsFailedError
from stageflow.journal import SUFFIX

if TYPE_CHECKING:
    from stageflow.engine.run import Run
    from stageflow.journal import Skipper

log = logging.getLogger("stageflow")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "run",
        help="run a pipeline over JSON Lines",
        description="Run PIPELINE over JSON Lines input (one record of the first stage's\n"
        "Input per line) and write the last stage's Outputs as JSON Lines. Records that\n"
        "fail go to the dead-letter output with their reason; the rest of the run goes\n"
        "on.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
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
    again = parser.add_mutually_exclusive_group()
    again.add_argument(
        "--append",
        action="store_true",
        help="append to the --output and --dead-letter files instead of replacing them",
    )
    again.add_argument(
        "--resume",
        action="store_true",
        help="continue a stopped run from the journal beside --output: cut the files to what "
        "it records and process only the lines not yet complete",
    )
    parser.add_argument(
        "--no-journal",
        action="store_true",
        help=f"keep no OUTPUT{SUFFIX} journal (a stop can then be resumed only with --skip, "
        "and only when it left no later results behind)",
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
        "--max-message-size",
        type=_mebibytes,
        default=64,
        metavar="MIB",
        help="the largest message between processes, in MiB; one record may take half (64)",
    )
    parser.add_argument(
        "--max-in-flight",
        type=_positive,
        default=8192,
        metavar="N",
        help="input records in flight at once; bounds memory (8192)",
    )
    parser.add_argument(
        "--no-fuse",
        action="store_true",
        help="run every stage in worker processes of its own, never fused with its neighbours",
    )
    parser.add_argument(
        "--upstream-nice",
        type=_niceness,
        default=5,
        metavar="N",
        help="run the workers of every stage but the last N nicer, so that the stages near "
        "the output get the CPU first when workers outnumber the cores; 0 for none (5)",
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
    parser.add_argument(
        "--listen",
        metavar="ADDRESS",
        help="also accept workers joining from other hosts (stageflow worker --join) on "
        "ADDRESS, like tcp://0.0.0.0:0 (port 0: a free one, printed)",
    )
    parser.add_argument(
        "--keys",
        metavar="DIR",
        help="the CURVE keys of --listen (made by stageflow keygen DIR); needed unless "
        "ADDRESS is loopback",
    )
    parser.add_argument(
        "--cluster",
        metavar="ADDRESS",
        help="place workers on the Dask cluster whose scheduler is at ADDRESS (dask://HOST:PORT "
        "or tcp://HOST:PORT) as long-running tasks that join this run; needs stageflow[dask]",
    )
    parser.add_argument(
        "--cluster-workers",
        type=_positive,
        metavar="N",
        help="how many workers --cluster places (default: one per Dask worker thread), spread "
        "over the stages with workers: 0",
    )
    parser.set_defaults(func=run)


EPILOG = f"""\
Files: --output and --dead-letter are created or emptied only once the run has
started (a worker of every stage is ready), so a run that fails to start changes
no file. With a regular file as --output and as input, a journal
OUTPUT{SUFFIX} records which input lines are complete; after any
stop (signals, kill -9, a crash) the same command with --resume writes every
result exactly once. A finished run removes its journal.

exit statuses:
  0    every input record was processed (dead letters within --max-errors)
  1    more records were dead-lettered than --max-errors allows
  2    bad usage, an invalid pipeline, an input or output path that cannot be
       used, a --resume the journal cannot serve, or a --cluster that cannot be
       used (no stageflow[dask], no scheduler at ADDRESS)
  3    the engine could not run: workers failed to start or kept dying
  4    the output, dead-letter or journal file could not be written (disk full,
       I/O error); stderr says how to resume. Also a complete run whose --report
       could not be written
  5    a stateful stage without snapshot hooks lost a worker's state, so its
       finish() output would be wrong; stderr names the stage
  130  stopped by SIGINT or SIGTERM; stderr says how to resume
  141  the reader of stdout went away (a closed pipe, e.g. | head -1)
"""


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is negative; give 0 or more")
    return value


def _niceness(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 19:
        raise argparse.ArgumentTypeError(f"{text} is not a niceness increment; give 0 to 19")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not positive; give 1 or more")
    return value


def _mebibytes(text: str) -> int:
    value = int(text)
    if not 1 <= value <= _MOST_MIB:
        raise argparse.ArgumentTypeError(f"{text} is not a size in MiB from 1 to {_MOST_MIB}")
    return value


#: The largest --max-message-size: a frame (half of it) must fit the int32 of a length.
_MOST_MIB = 2047


def _positive_float(text: str) -> float:
    from stageflow.engine.options import MAX_SECONDS  # the engine's own bound, when needed

    value = float(text)
    if not 0 < value <= MAX_SECONDS:
        raise argparse.ArgumentTypeError(
            f"{text} is not a number of seconds above 0 and at most {MAX_SECONDS:.0f}"
        )
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
            if status == EXIT_OK:
                status = EXIT_OUTPUT_FAILED  # a run whose report is missing did not succeed
    return status


#: The collector's first threshold while records flow (stdlib default 700): net allocations
#: of tracked objects between two collections of the youngest generation.
_RUN_THRESHOLD = 100_000


def _run(args: argparse.Namespace, observation: observe.Observation) -> int:
    with starting():
        from stageflow.engine import shipping
        from stageflow.pipeline import Pipeline

        pipeline = Pipeline.from_file(args.pipeline)
        # At once: the fork server imports the stage modules while this process imports the
        # engine below and opens the files.
        args.launcher.prepare(shipping.modules(stage.cls for stage in pipeline.stages))
        # Imported here so that the other commands never load the engine or ZeroMQ.
        from stageflow.engine.run import Run
        from stageflow.security import Keys, require_keys

    # Refused before any output file is made: keys that do not load, an open door without keys.
    keys = Keys.for_coordinator(args.keys) if args.keys else None
    if args.listen is not None:
        require_keys(args.listen, keys)
    try:
        source = _open_input(args.input)
    except OSError as exc:
        fail(f"cannot open the input file {exc.filename!r}: {exc.strerror}; check the path")
        return EXIT_INVALID
    try:
        outputs = Outputs(args, source.fileno())
    except OutputSetupError as exc:
        _close_input(source)
        fail(str(exc))
        return EXIT_INVALID
    if outputs.resume is not None:
        log.info(
            "resuming from %s: %d input lines are already complete",
            outputs.journal_path,
            len(outputs.resume.done),
        )
    elif outputs.journaled and os.path.exists(outputs.journal_path):
        log.warning(
            "%s says an earlier run into this output stopped before its end; this run "
            "starts over (stop it now and add --resume to continue that one instead)",
            outputs.journal_path,
        )
    in_flight = None if outputs.journaled else outputs.in_flight
    the_run = Run(
        pipeline,
        _lines(source, args.skip, outputs.skipper(), in_flight),
        dead_letter=outputs.dead_letter_sink,
        max_errors=args.max_errors,
        numbered=True,
        # A pipe or a terminal may pause; read it in a thread so results keep flowing.
        read_ahead=not _is_regular_file(source),
        batch_size=args.batch_size,
        max_in_flight=args.max_in_flight,
        max_message_size=args.max_message_size << 20,
        fuse=not args.no_fuse,
        upstream_nice=args.upstream_nice,
        heartbeat_timeout=args.heartbeat_timeout,
        stuck_after=args.stuck_after,
        stop_timeout=args.stop_timeout,
        log_level=logging.getLogger().getEffectiveLevel(),
        metrics=observation.metrics,
        latency=observation.latency,
        listen=args.listen,
        keys=keys,
        # Started by main() before anything else (see stageflow.cli.start_engine).
        launcher=args.launcher,
        cluster=args.cluster,
        cluster_workers=args.cluster_workers,
    )
    # The observer only asks the output for fileno() and flush().
    observation.attach(the_run, source, cast("IO[bytes]", outputs))
    signals = _GracefulStop(the_run, outputs)
    # This process is the CLI's own: what it holds by now (the imports, the pipeline) lives to
    # the end, and every full collection during the run would walk all of it for nothing.
    gc.freeze()
    # The records in flight (thousands of them, each a few objects) are young and alive, so
    # each collection every 700 allocations walked them all to free nothing: a tenth of the
    # coordinator's time on a 50,000-record run. The run makes few cycles; collect rarely.
    thresholds = gc.get_threshold()
    gc.set_threshold(_RUN_THRESHOLD, *thresholds[1:])
    batches = the_run.batches(on_idle=outputs.idle, on_started=outputs.open)
    status, error = EXIT_OK, None
    try:
        complete = outputs.complete
        for batch in batches:
            complete(batch)
    except RecordsFailedError as exc:
        status, error = EXIT_RECORDS_FAILED, str(exc)
    except KeyboardInterrupt:
        status, error = EXIT_INTERRUPTED, "stopped at once on a second signal"
    except EngineError as exc:
        status, error = EXIT_ENGINE, str(exc)
    except OutputSetupError as exc:
        status, error = EXIT_INVALID, str(exc)
    except SinkFailed as exc:
        status, error = EXIT_OUTPUT_FAILED, str(exc)
    except OutputClosed:
        status = EXIT_BROKEN_PIPE
    finally:
        outputs.busy = True  # from here on a second signal only hurries the stop along
        if status != EXIT_OK:
            the_run.abort()  # nothing more is read, and no worker is waited for
        batches.close()
        gc.set_threshold(*thresholds)
        signals.restore()
        _close_input(source)
    report = the_run.report
    try:
        outputs.close(finished=report.finished)
    except SinkFailed as exc:
        status, error = EXIT_OUTPUT_FAILED, str(exc)
    except OutputClosed:
        status = EXIT_BROKEN_PIPE
    # What the output holds, not what the engine handed over: after a failed write the two
    # differ, and the summary and the report must not count the results that were lost.
    report.results = outputs.output.lines
    if status == EXIT_BROKEN_PIPE:
        log.info("the reader of the output went away; stopped after %d results", report.results)
        return status
    if status in (EXIT_OK, EXIT_RECORDS_FAILED) and report.interrupted:
        # A signal stopped the run: that is its status (records it set aside as Stopped
        # are dead letters like any other, and the resume hint covers the rest).
        if status == EXIT_RECORDS_FAILED:
            fail(str(error))
        status, error = EXIT_INTERRUPTED, "stopped early, after finishing the records in flight"
    if error is not None and status != EXIT_INTERRUPTED:
        fail(error)  # the cause first: stderr ends with the summary and the way on
        if report.error is None and status != EXIT_RECORDS_FAILED:
            report.error = error
    log.info("%s", report.summary())
    if report.state_lost and status in (EXIT_OK, EXIT_RECORDS_FAILED):
        return EXIT_STATE_LOST  # the engine logged the loss, one line per lost worker
    if status in (EXIT_OK, EXIT_RECORDS_FAILED):
        return status
    hint = report.resume_hint = outputs.resume_hint(
        report.last_line_read, failed=status != EXIT_INTERRUPTED
    )
    fail(f"{error}; {hint}" if status == EXIT_INTERRUPTED else hint)
    return status


class _GracefulStop:
    """First SIGINT/SIGTERM: stop reading and drain. Second: stop at once.

    The second one interrupts the engine, never the output's bookkeeping: inside that, it
    waits for its end, so what the journal claims always matches the files.
    """

    def __init__(self, the_run: Run, outputs: Outputs) -> None:
        self.run = the_run
        self.outputs = outputs
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
        if self.run.report.finished:
            # Every result is out and only the workers' exit is awaited: the run succeeded,
            # and the abort ends that wait at once.
            log.warning(
                "received %s again: stopping the workers at once", signal.Signals(signum).name
            )
            return
        if self.outputs.busy:
            self.outputs.interrupt_pending = True
            return
        raise KeyboardInterrupt

    def restore(self) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)


def _open_input(path: str) -> IO[bytes]:
    if path == "-":
        return sys.stdin.buffer
    return open(path, "rb")


def _close_input(source: IO[bytes]) -> None:
    if source is not sys.stdin.buffer:
        source.close()


def _lines(
    source: IO[bytes], skip: int, done: Skipper | None, in_flight: set[int] | None
) -> Iterator[tuple[int, bytes]]:
    """Numbered non-blank lines, after the first ``skip`` and without those ``done``.

    A UTF-8 byte order mark at the very start of the input (as some Windows editors write
    one) is not part of the first record. ``in_flight`` collects the numbers handed out,
    for a run without a journal to tell where it can resume.
    """
    if not skip and done is None and in_flight is None and _is_regular_file(source):
        return _file_lines(source)
    return _stream_lines(source, skip, done, in_flight)


def _stream_lines(
    source: IO[bytes], skip: int, done: Skipper | None, in_flight: set[int] | None
) -> Iterator[tuple[int, bytes]]:
    for number, line in enumerate(source, 1):
        if number == 1:
            line = line.removeprefix(codecs.BOM_UTF8)
        if number <= skip or (done is not None and number in done):
            continue
        line = line.rstrip(b"\r\n")
        if line and not line.isspace():
            if in_flight is not None:
                in_flight.add(number)
            yield number, line


#: About how many bytes of a regular input file are read into lines at once: little enough
#: that the progress display, which asks the file how far it was read, moves smoothly.
_BLOCK_BYTES = 1 << 16


def _file_lines(source: IO[bytes]) -> Iterator[tuple[int, bytes]]:
    """:func:`_lines` of a whole file, made a block of lines at a time and handed out at C
    speed: a file is there to its end, so a block never waits to fill, as a pipe's could.
    Nothing is read before the first line is asked for."""
    numbers = count(1)
    first = [True]

    def numbered(block: list[bytes]) -> Iterator[tuple[int, bytes]]:
        if first:
            block[0] = block[0].removeprefix(codecs.BOM_UTF8)
            first.clear()
        lines = list(map(bytes.rstrip, block, repeat(b"\r\n")))
        # A line that strip() leaves empty is blank, and compress() drops it.
        pairs = zip(islice(numbers, len(lines)), lines, strict=True)
        return compress(pairs, map(bytes.strip, lines))

    return chain.from_iterable(map(numbered, iter(partial(source.readlines, _BLOCK_BYTES), [])))


def _is_regular_file(source: IO[bytes]) -> bool:
    try:
        return stat.S_ISREG(os.fstat(source.fileno()).st_mode)
    except (OSError, ValueError):
        return True
