"""``stageflow plugins``: what is installed, where it came from, what each stage takes.

``--json`` prints the same for tools, in the ``stageflow-plugins/1`` format::

    {
      "format": "stageflow-plugins/1",
      "plugins": [{
          "name": str, "distribution": str | null, "version": str | null,
          "stages": [{
              "name": str, "class": "module:QualName",
              "input": model, "output": model, "config": model | null
          }]
      }],
      "problems": [{"plugin": str, "distribution": str | null, "error": str}]
    }

where a model is ``{"name": str, "schema": JSON Schema | null, "schema_error": str | null}``.
Within version 1 keys are only added.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from pydantic import BaseModel

from stageflow.plugins import StageEntry, StageRegistry, load_registry

FORMAT_VERSION = "stageflow-plugins/1"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "plugins",
        help="list installed plugins and their stages",
        description="List each plugin's distribution and version, and its stages with their "
        "Input → Output models. Plugins that failed to load are listed with the reason.",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help=f"print the listing as JSON ({FORMAT_VERSION}) with every model's JSON Schema",
    )
    parser.set_defaults(func=list_plugins)


def list_plugins(args: argparse.Namespace) -> int:
    registry = load_registry()
    if args.json:
        print(json.dumps(describe(registry), indent=2, ensure_ascii=False))
        return 0
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


def describe(registry: StageRegistry) -> dict[str, Any]:
    """The registry as ``stageflow-plugins/1`` data."""
    plugins = []
    for plugin, entries in sorted(registry.by_plugin().items()):
        first = entries[0]
        plugins.append(
            {
                "name": plugin,
                "distribution": first.distribution,
                "version": first.version,
                "stages": [_stage(entry) for entry in sorted(entries, key=lambda e: e.name)],
            }
        )
    return {
        "format": FORMAT_VERSION,
        "plugins": plugins,
        "problems": [
            {"plugin": p.plugin, "distribution": p.distribution, "error": p.error}
            for p in registry.problems
        ],
    }


def _stage(entry: StageEntry) -> dict[str, Any]:
    cls = entry.cls
    return {
        "name": entry.name,
        "class": entry.reference,
        "input": _model(cls.Input, "validation"),
        "output": _model(cls.Output, "serialization"),
        "config": _model(cls.Config, "validation") if cls.Config is not None else None,
    }


def _model(model: type[BaseModel], mode: Any) -> dict[str, Any]:
    try:
        schema: dict[str, Any] | None = model.model_json_schema(mode=mode)
        error = None
    except Exception as exc:  # noqa: BLE001 - one model without a schema must not hide the rest
        schema, error = None, f"{type(exc).__name__}: {exc}"
    return {"name": model.__name__, "schema": schema, "schema_error": error}
