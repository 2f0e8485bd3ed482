"""A peer pipeline on Bytewax 0.21 (the ``bytewax`` extra), four worker processes.

    python benchmarks/peer_bytewax.py --pipeline text -i IN.jsonl -o OUT.jsonl

The dataflow reads the input file, spreads the records over the workers (``redistribute``),
runs the stages of :mod:`benchmarks.peer_work` as ``flat_map`` steps on dicts (no validation,
like the hand-written peers), and each worker writes its results to a part file; the parts
are joined into ``OUT`` at the end, inside the measured run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.peer_work import STEPS, TOPOLOGY

_DUMPS = json.JSONEncoder(separators=(",", ":")).encode


def flow() -> Any:
    """The dataflow; ``python -m bytewax.testing`` imports it with PEER_* in the environment."""
    import bytewax.operators as op
    from bytewax.connectors.files import FileSource
    from bytewax.dataflow import Dataflow
    from bytewax.outputs import DynamicSink, StatelessSinkPartition

    pipeline = os.environ["PEER_PIPELINE"]
    target = os.environ["PEER_OUTPUT"]

    class Part(StatelessSinkPartition[str]):
        def __init__(self, path: str) -> None:
            self._file = open(path, "w")  # noqa: SIM115 - closed by close()

        def write_batch(self, items: list[str]) -> None:
            self._file.write("".join(f"{item}\n" for item in items))

        def close(self) -> None:
            self._file.close()

    class Parts(DynamicSink[str]):
        def build(self, step_id: str, worker_index: int, worker_count: int) -> Part:
            return Part(f"{target}.part{worker_index}")

    dataflow = Dataflow(f"peer-{pipeline}")
    stream = op.input("read", dataflow, FileSource(os.environ["PEER_INPUT"]))
    stream = op.redistribute("spread", stream)
    stream = op.map("parse", stream, json.loads)
    for name, _ in TOPOLOGY[pipeline]:
        stream = op.flat_map(name, stream, STEPS[pipeline][name])
    op.output("write", op.map("dump", stream, _DUMPS), Parts())
    return dataflow


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pipeline", choices=sorted(TOPOLOGY), required=True)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("-i", "--input", required=True)
    parser.add_argument("-o", "--output", required=True)
    args = parser.parse_args()
    output = Path(args.output).resolve()
    env = {**os.environ, "PEER_PIPELINE": args.pipeline, "PEER_OUTPUT": str(output),
           "PEER_INPUT": str(Path(args.input).resolve())}
    subprocess.run(
        [sys.executable, "-m", "bytewax.testing", "benchmarks.peer_bytewax:flow()",
         "-p", str(args.processes), "-w", "1"],
        check=True, env=env, cwd=Path(__file__).resolve().parent.parent,
    )
    parts = sorted(output.parent.glob(output.name + ".part*"))
    with output.open("wb") as out:
        for part in parts:
            out.write(part.read_bytes())
            part.unlink()


if __name__ == "__main__":
    main()
