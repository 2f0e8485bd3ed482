"""``stageflow new plugin NAME`` and ``stageflow new stage NAME``: start a plugin project."""

from __future__ import annotations

import argparse
import os
from typing import Any

from stageflow.cli import EXIT_INVALID, EXIT_OK, fail
from stageflow.errors import ScaffoldError


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "new",
        help="create a stage plugin package, or add a stage to one",
        description="Create a ready stage plugin package (`new plugin NAME`), or add a stage "
        "module with its tests to the plugin project in the current directory and register "
        "it (`new stage NAME`).",
    )
    kinds = parser.add_subparsers(dest="kind", metavar="KIND", required=True)
    plugin = kinds.add_parser(
        "plugin",
        help="create stageflow-NAME/: package, example stage, tests, pipeline, README",
        description="Create the directory stageflow-NAME with an installable plugin package "
        "(entry point, one example stage, tests using stageflow.testing, a pipeline file, a "
        "README and a py.typed marker).",
    )
    plugin.add_argument("name", metavar="NAME", help="the plugin's name, e.g. word-count")
    plugin.add_argument(
        "--dir", default=".", metavar="DIR", help="create stageflow-NAME inside DIR (default .)"
    )
    plugin.set_defaults(func=new)
    stage = kinds.add_parser(
        "stage",
        help="add stage NAME to the plugin project in the current directory and register it",
        description="Add a stage module and its tests to a plugin project made by `stageflow "
        "new plugin`, and register the stage in the project's entry-point module.",
    )
    stage.add_argument("name", metavar="NAME", help="the stage's name, e.g. word-count")
    stage.add_argument(
        "--dir", default=".", metavar="DIR", help="the plugin project's directory (default .)"
    )
    stage.set_defaults(func=new)


def new(args: argparse.Namespace) -> int:
    from stageflow.scaffold import new_plugin, new_stage

    try:
        if args.kind == "plugin":
            written = new_plugin(args.name, args.dir)
        else:
            written = new_stage(args.name, args.dir)
    except ScaffoldError as exc:
        fail(str(exc))
        return EXIT_INVALID
    except OSError as exc:
        fail(f"cannot write {exc.filename!r}: {exc.strerror}; check the directory")
        return EXIT_INVALID
    for path in written:
        print(f"wrote {path}")
    if args.kind == "plugin":
        root = os.path.join(args.dir, f"stageflow-{args.name}")
        print(f"next: pip install -e '{root}[test]' && cd {root} && pytest && stageflow plugins")
    else:
        module = args.name.replace("-", "_")
        print(
            f"next: pytest tests/test_{module}.py (an editable install sees the new stage at "
            "once; reinstall a plain one)"
        )
    return EXIT_OK
