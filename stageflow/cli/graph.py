"""``stageflow graph``: being written (see the open issue)."""

from __future__ import annotations

from typing import Any


def register(subparsers: Any) -> None:
    subparsers.add_parser("graph", help="(in progress)").set_defaults(func=lambda args: 2)
