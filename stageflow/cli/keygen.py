"""``stageflow keygen DIR``: the CURVE key pairs a run with workers on other hosts needs."""

from __future__ import annotations

import argparse
from typing import Any

from stageflow.security import generate_keys


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "keygen",
        help="write the CURVE keys for workers joining from other hosts",
        description="Write a coordinator and a worker CURVE key pair into DIR (pyzmq's "
        "certificate format; secret files mode 0600). Keep coordinator.key_secret and "
        "worker.key on the coordinator's host; copy coordinator.key and worker.key_secret to "
        "every worker host. With --worker NAME, write only a pair for one host: "
        "worker-NAME.key stays (removing it shuts that host out), worker-NAME.key_secret goes "
        "to the host with coordinator.key.",
    )
    parser.add_argument("directory", metavar="DIR", help="where to write the keys (created)")
    parser.add_argument("--force", action="store_true", help="replace keys already in DIR")
    parser.add_argument(
        "--worker", metavar="NAME", help="write only a worker pair of host NAME's own"
    )
    parser.set_defaults(func=keygen)


def keygen(args: argparse.Namespace) -> int:
    for path in generate_keys(args.directory, force=args.force, worker=args.worker):
        print(path)
    return 0
