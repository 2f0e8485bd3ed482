"""``stageflow worker --join tcp://HOST:PORT --keys DIR``: serve a run from this host."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from stageflow.cli.run import _positive, _positive_float


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "worker",
        help="join a run on another host (stageflow run --listen) with worker processes",
        description="Start worker processes on this host that join the run listening at "
        "ADDRESS (stageflow run --listen), authenticated and encrypted with CURVE. The stages "
        "must be importable here. Exit status: 0 when the run ended, 2 when the coordinator "
        "refused this host (key, version or stage), 4 when the coordinator went silent, 5 when "
        "no coordinator answered within --wait.",
    )
    parser.add_argument(
        "--join", required=True, metavar="ADDRESS", help="the run's address, tcp://HOST:PORT"
    )
    parser.add_argument(
        "--keys",
        required=True,
        metavar="DIR",
        help="a folder with the run's coordinator.key and worker.key_secret",
    )
    parser.add_argument(
        "--stage", metavar="NAME", help="the stage to serve (default: the one the run needs most)"
    )
    parser.add_argument(
        "--processes", type=_positive, default=1, metavar="N", help="worker processes (1)"
    )
    parser.add_argument(
        "--stay",
        action="store_true",
        help="after a run ends (or its coordinator is gone), wait for the next one",
    )
    parser.add_argument(
        "--wait",
        type=_positive_float,
        default=60.0,
        metavar="S",
        help="seconds to wait for the coordinator to answer, without --stay (60)",
    )
    parser.set_defaults(func=worker)


def worker(args: argparse.Namespace) -> int:
    from stageflow.engine.join import serve

    return serve(
        args.join,
        args.keys,
        stage=args.stage,
        processes=args.processes,
        stay=args.stay,
        wait=args.wait,
        log_level=logging.getLogger().getEffectiveLevel(),
    )
