"""The ``stageflow`` command line.

Each subcommand lives in its own module with a ``register(subparsers)`` function that adds
its parser and sets ``func`` to a callable taking the parsed arguments and returning the
exit status.

Exit statuses (documented in the README):

=====  ==============================================================================
0      success
1      records were dead-lettered beyond ``--max-errors``
2      bad usage, an invalid pipeline, or an unreadable input file
3      the engine could not run (workers failed to start or kept dying)
4      the output, dead-letter or journal file could not be written (disk full, I/O error)
5      a stateful stage lost a worker's state, so its ``finish()`` output is wrong
130    interrupted by SIGINT or SIGTERM
141    the reader of stdout went away (a closed pipe, e.g. ``| head -1``)
=====  ==============================================================================
"""

from __future__ import annotations

import gc
import importlib
import logging
import os
import sys
import traceback
from collections.abc import Sequence
from typing import TYPE_CHECKING

from stageflow._collector import starting
from stageflow.errors import (
    ClusterError,
    EngineError,
    PipelineError,
    PluginError,
    SecurityError,
    StageflowError,
)

if TYPE_CHECKING:
    import argparse

    from stageflow.engine.launcher import Launcher

EXIT_OK = 0
EXIT_RECORDS_FAILED = 1
EXIT_INVALID = 2
EXIT_ENGINE = 3
EXIT_OUTPUT_FAILED = 4
EXIT_STATE_LOST = 5
EXIT_INTERRUPTED = 130
#: 128 + SIGPIPE, what a shell reports for a program that a closed pipe stopped.
EXIT_BROKEN_PIPE = 141

#: What both ``stageflow run`` and every worker import: pyzmq and the control plane, the
#: runner with pydantic's validators, and what plugin discovery (ours, pydantic's) reads.
#: Imported before the fork server is forked, so once for both processes instead of once in
#: each, which on two busy cores is time taken from both.
SHARED = (
    "stageflow.engine.control",
    "stageflow.engine.runner",
    "importlib.metadata",
    "pydantic.types",
)


def build_parser() -> argparse.ArgumentParser:
    # Here, not at the top: the fork server, forked before the parser is built, never
    # needs it.
    import argparse

    from stageflow import __version__
    from stageflow.cli import graph, keygen, new, plugins, run, schema, validate, worker

    parser = argparse.ArgumentParser(
        prog="stageflow",
        description="Run, check and draw staged data-processing pipelines.",
    )
    parser.add_argument("--version", action="version", version=f"stageflow {__version__}")
    _add_log_options(parser, default=False)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in (run, validate, graph, plugins, schema, keygen, new, worker):
        module.register(subparsers)
    # Also after the subcommand (`stageflow run -v ...`); SUPPRESS keeps a subcommand that
    # was given neither from resetting what was given before it.
    for subparser in subparsers.choices.values():
        _add_log_options(subparser, default=argparse.SUPPRESS)
    return parser


def _add_log_options(parser: argparse.ArgumentParser, default: object) -> None:
    parser.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=default,
        help="log only warnings and errors to stderr",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=default,
        help="log debug detail to stderr: worker starts and exits, tracebacks behind errors",
    )


def fail(message: str) -> None:
    """Print one error sentence to stderr, the way every command reports user errors."""
    print(f"stageflow: error: {message}", file=sys.stderr)


def _fail_with(exc: BaseException, verbose: bool) -> None:
    """One sentence for the user; with -v, first the traceback of what caused it."""
    if verbose:
        traceback.print_exception(exc, file=sys.stderr)
    fail(str(exc))


def start_engine(argv: Sequence[str]) -> Launcher | None:
    """The fork server of ``stageflow run``, before the command line is even parsed.

    It is forked from this process while it holds nothing but stageflow and pydantic (see
    :class:`~stageflow.engine.launcher.ForkServerLauncher`), and imports Twisted, ZeroMQ
    and the engine while this process imports its own modules, parses the command line
    and reads the pipeline: the two largest parts of a start overlap. The command is the
    first word that is not an option (the options before it take no value).
    """
    if next((arg for arg in argv if not arg.startswith("-")), None) != "run":
        return None
    for name in SHARED:
        importlib.import_module(name)
    from stageflow.engine.launcher import ForkServerLauncher

    return ForkServerLauncher(fork=True)


def main(argv: Sequence[str] | None = None) -> int:
    """The ``stageflow`` program: run the command in ``argv`` (by default sys.argv's)."""
    # `uses: module:Class` finds modules in the current directory, as with `python -m`.
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    words = sys.argv[1:] if argv is None else list(argv)
    launcher: Launcher | None = None
    try:
        # The start, with the collector held off (stageflow._collector): the fork server,
        # then this process's own imports as the command line is parsed.
        with starting():
            launcher = start_engine(words)
            args = _parse(words, launcher)
        status = _command(args)
    finally:
        if launcher is not None:
            launcher.close()
    if argv is None:
        # This process ends now. The interpreter's last collections would walk every object
        # the imports made (a tenth of a second with pydantic and ZeroMQ) to free what the
        # exit frees anyway; everything that needed closing is closed.
        gc.freeze()
    return status


def _parse(argv: list[str], launcher: Launcher | None) -> argparse.Namespace:
    import argparse

    return build_parser().parse_args(argv, namespace=argparse.Namespace(launcher=launcher))


def _command(args: argparse.Namespace) -> int:
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="stageflow: %(message)s", stream=sys.stderr)
    try:
        status: int = args.func(args)
    except (ClusterError, PipelineError, PluginError, SecurityError) as exc:
        _fail_with(exc, args.verbose)
        return EXIT_INVALID
    except EngineError as exc:
        _fail_with(exc, args.verbose)
        return EXIT_ENGINE
    except StageflowError as exc:
        _fail_with(exc, args.verbose)
        return EXIT_RECORDS_FAILED
    except KeyboardInterrupt:
        fail("interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader of our output went away (e.g. `| head`); nothing left to say.
        return EXIT_BROKEN_PIPE
    return status
