"""``stageflow graph PIPELINE``: draw a pipeline from its file, running nothing."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stageflow.cli import EXIT_INVALID, EXIT_OK, fail

if TYPE_CHECKING:
    from stageflow.graph import Format

log = logging.getLogger(__name__)

# stageflow.graph is imported only when a graph is drawn: every command builds this parser,
# and `stageflow run`, which starts against the clock, draws nothing.
_SUFFIXES: dict[str, Format] = {
    ".txt": "text",
    ".dot": "dot",
    ".gv": "dot",
    ".mmd": "mermaid",
    ".mermaid": "mermaid",
    ".svg": "svg",
    ".png": "png",
    ".html": "html",
    ".htm": "html",
    ".json": "json",
}
#: Every format, in stageflow.graph.FORMATS' order (a test keeps the two the same).
FORMATS: tuple[Format, ...] = tuple(dict.fromkeys(_SUFFIXES.values()))


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "graph",
        help="draw a pipeline without running it",
        description="Draw the pipeline's stages and the model each edge carries, from the "
        "pipeline file and the installed plugins; nothing is started. Schema mismatches are "
        "drawn and marked, not rejected (that is `stageflow validate`'s job).",
    )
    parser.add_argument("pipeline", help="the pipeline YAML file")
    parser.add_argument(
        "-f",
        "--format",
        choices=FORMATS,
        help="what to draw: text (terminal, the default), dot (Graphviz), mermaid (GitHub "
        "Markdown), svg or png (need Graphviz's `dot`), html (one self-contained page with "
        "the schemas), json (the graph model, format stageflow-graph/1); without --format "
        "the extension of -o FILE decides, else text",
    )
    parser.add_argument(
        "-o", "--output", metavar="FILE", help="write the drawing to FILE instead of stdout"
    )
    parser.add_argument(
        "--report",
        metavar="FILE",
        help="draw a run's numbers on the graph, from the report `stageflow run --report FILE` "
        "wrote: records per edge, records/s and busy share per stage, dead letters in red, "
        "the slowest stage marked",
    )
    parser.set_defaults(func=graph)


def graph(args: argparse.Namespace) -> int:
    if args.format is None and args.output is not None and _format_from_suffix(args.output) is None:
        fail(
            f"cannot tell the format of {args.output!r} from its extension; name a file ending in "
            f"{', '.join(_SUFFIXES)}, or give --format"
        )
        return EXIT_INVALID
    fmt: Format = args.format or _format_from_suffix(args.output) or "text"
    if fmt == "png" and args.output is None and sys.stdout.isatty():
        fail("png is binary and stdout is a terminal; write it with -o FILE or redirect stdout")
        return EXIT_INVALID
    from stageflow.graph import GraphvizError, build_graph, render
    from stageflow.graph.overlay import load_overlay, with_overlay
    from stageflow.pipeline import Pipeline

    pipeline = Pipeline.from_file(args.pipeline, check_schemas=False)
    drawing_graph = build_graph(pipeline)
    if args.report is not None:
        drawing_graph = with_overlay(drawing_graph, load_overlay(args.report))
    try:
        drawing = render(drawing_graph, fmt)
    except GraphvizError as exc:
        fail(str(exc))
        return EXIT_INVALID
    data = drawing.encode("utf-8") if isinstance(drawing, str) else drawing
    if args.output is None:
        sys.stdout.flush()
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    else:
        try:
            Path(args.output).write_bytes(data)
        except OSError as exc:
            fail(
                f"cannot write {args.output!r}: {exc.strerror or exc}; "
                "check that its directory exists and is writable"
            )
            return EXIT_INVALID
    problems = drawing_graph.problems
    if problems:
        noun = "mismatch" if len(problems) == 1 else "mismatches"
        log.warning(
            "%d schema %s drawn and marked; `stageflow validate` rejects this pipeline",
            len(problems),
            noun,
        )
    return EXIT_OK


def _format_from_suffix(output: str | None) -> Format | None:
    if output is None:
        return None
    return _SUFFIXES.get(Path(output).suffix.lower())
