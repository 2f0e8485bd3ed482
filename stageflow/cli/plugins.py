"""``stageflow plugins``: what is installed, where it came from, what each stage takes."""

from __future__ import annotations

import argparse
from typing import Any

from stageflow.plugins import load_registry


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "plugins",
        help="list installed plugins and their stages",
        description="List each plugin's distribution and version, and its stages with their "
        "Input → Output models. Plugins that failed to load are listed with the reason.",
    )
    parser.set_defaults(func=list_plugins)


def list_plugins(args: argparse.Namespace) -> int:
    registry = load_registry()
    grouped = registry.by_plugin()
    if not grouped and not registry.problems:
        print("no stageflow plugins installed (entry-point group 'stageflow')")
    for plugin, entries in sorted(grouped.items()):
        first = entries[0]
        origin = f"{first.distribution} {first.version}" if first.distribution else "(unknown)"
        print(f"{plugin}  [{origin}]")
        for entry in sorted(entries, key=lambda e: e.name):
            print(
                f"  {entry.name}: {entry.cls.Input.__name__} → {entry.cls.Output.__name__}"
                f"  ({entry.reference})"
            )
    for problem in registry.problems:
        print(f"BROKEN {problem}")
    return 0
