"""A peer pipeline on a plain ``multiprocessing.Pool``: what a user could write instead.

    python benchmarks/peer_pool.py --pipeline text [--validate] -i IN.jsonl -o OUT.jsonl

The parent reads lines in chunks, the pool's workers run all three stages on each chunk and
send back the result lines, the parent writes them (in completion order, like stageflow).
``--validate`` uses the pydantic models on every hop (:mod:`benchmarks.peer_models`);
without it, the same steps on dicts with ``json`` (:mod:`benchmarks.peer_work`).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
from collections.abc import Callable, Iterator
from itertools import islice
from pathlib import Path
from typing import IO

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

CHUNK = 256
_run: Callable[[bytes], list[bytes]]


def _plain(pipeline: str) -> Callable[[bytes], list[bytes]]:
    from benchmarks.peer_work import chain

    run = chain(pipeline)
    dumps = json.JSONEncoder(separators=(",", ":")).encode
    return lambda line: [dumps(out).encode() for out in run(json.loads(line))]


def _start(pipeline: str, validate: bool) -> None:
    global _run
    if validate:
        from benchmarks.peer_models import chain

        _run = chain(pipeline)
    else:
        _run = _plain(pipeline)


def _work(lines: list[bytes]) -> bytes:
    run = _run
    return b"".join(out + b"\n" for line in lines for out in run(line))


def _chunks(source: IO[bytes]) -> Iterator[list[bytes]]:
    lines = (line for line in source if line.strip())
    while chunk := list(islice(lines, CHUNK)):
        yield chunk


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pipeline", choices=("text", "numeric"), required=True)
    parser.add_argument("--validate", action="store_true")
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("-i", "--input", required=True)
    parser.add_argument("-o", "--output", required=True)
    args = parser.parse_args()
    with (
        open(args.input, "rb") as source,
        open(args.output, "wb") as output,
        multiprocessing.Pool(args.processes, _start, (args.pipeline, args.validate)) as pool,
    ):
        for block in pool.imap_unordered(_work, _chunks(source)):
            output.write(block)


if __name__ == "__main__":
    main()
