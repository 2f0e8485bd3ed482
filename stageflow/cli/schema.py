"""``stageflow schema``: JSON Schemas of the pipeline file and of installed stages' models.

* ``stageflow schema`` prints the pipeline-file schema.
* ``stageflow schema --stage NAME`` prints one stage's schemas as one JSON object with the
  keys ``input``, ``output`` and (when the stage has a Config) ``config``.
* ``stageflow schema --editor`` prints the pipeline-file schema specialised for the
  installed stages (``uses:`` names, ``config:`` keys per stage), for editors.
* ``stageflow schema --all -o DIR`` writes ``DIR/pipeline.schema.json`` and
  ``DIR/stages/<stage>.{input,output,config}.json`` for every installed stage, removing
  stage files of stages no longer installed. The repository's ``schemas/`` is made this way.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from stageflow.errors import PipelineError
from stageflow.plugins import load_registry
from stageflow.schema import dumps, editor_schema, pipeline_schema, stage_schemas, write_all


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "schema",
        help="print or write JSON Schemas of pipeline files and stage models",
        description="Without options, print the JSON Schema of pipeline files. With --stage, "
        "print one installed stage's Input, Output and Config schemas. With --editor, print the "
        "pipeline schema specialised for the installed stages. With --all -o DIR, "
        "write the pipeline schema and every installed stage's schemas under DIR.",
    )
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--stage", metavar="NAME", help="print the schemas of this stage")
    what.add_argument(
        "--editor",
        action="store_true",
        help="print the pipeline schema with the installed stages' names and config keys",
    )
    what.add_argument(
        "--all",
        action="store_true",
        help="write all schemas under the directory given with -o",
    )
    parser.add_argument(
        "-o",
        "--output-dir",
        metavar="DIR",
        help="with --all: the directory to write (created if missing)",
    )
    parser.set_defaults(func=schema)


def schema(args: argparse.Namespace) -> int:
    if args.all != (args.output_dir is not None):
        raise PipelineError(
            "--all and -o DIR go together: use `stageflow schema --all -o DIR` to write files, "
            "or neither to print the pipeline schema"
        )
    if args.all:
        registry = load_registry()
        written, removed = write_all(args.output_dir, registry)
        for path in removed:
            print(f"removed {path}")
        print(f"wrote {len(written)} schema files under {args.output_dir}")
        return 0
    if args.editor:
        sys.stdout.write(dumps(editor_schema(load_registry())))
        return 0
    if args.stage is not None:
        entry = load_registry().resolve(args.stage)
        sys.stdout.write(dumps(dict(stage_schemas(entry.cls))))
        return 0
    sys.stdout.write(dumps(pipeline_schema()))
    return 0
