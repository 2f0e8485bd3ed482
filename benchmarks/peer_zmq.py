"""A peer pipeline hand-written on plain pyzmq + json, four worker processes.

The topology, the source/sink loop and the worker start-up are benchmarks/seed_handwritten.py's;
what differs is that a stage may turn one record into several or none, so each message holds
what one input line has become, as JSON lines (possibly none): one message per input line on
every hop, no validation, no acknowledgement.

    python benchmarks/peer_zmq.py --pipeline text -i IN.jsonl -o OUT.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO

import zmq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.peer_work import STEPS, TOPOLOGY

_DUMPS = json.JSONEncoder(separators=(",", ":")).encode


def transform(role: str) -> Callable[[bytes], bytes]:
    """The work of ``role`` (``pipeline.stage``) on one message of JSON lines."""
    pipeline, _, stage = role.partition(".")
    step, loads, dumps = STEPS[pipeline][stage], json.loads, _DUMPS
    return lambda message: b"\n".join(
        dumps(out).encode() for line in message.split(b"\n") if line for out in step(loads(line))
    )


def work(role: str, downstream: list[str]) -> None:
    """One worker: PULL a message, do the stage's work on its records, PUSH what came out."""
    context = zmq.Context()
    out = context.socket(zmq.PUSH)
    for address in downstream:
        out.connect(address)
    inp = context.socket(zmq.PULL)
    inp.bind("tcp://127.0.0.1:*")
    print(inp.getsockopt_string(zmq.LAST_ENDPOINT), flush=True)
    recv, send, step = inp.recv, out.send, transform(role)
    while True:
        send(step(recv()))


def main(
    description: str,
    script: str,
    work: Callable[[str, list[str]], None],
    coordinate: Callable[..., int],
) -> None:
    """The command line the hand-written peers share: a coordinator, or one worker."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--pipeline", choices=sorted(TOPOLOGY))
    parser.add_argument("-i", "--input")
    parser.add_argument("-o", "--output")
    parser.add_argument("--worker", nargs="+", metavar=("ROLE", "DOWNSTREAM"))
    args = parser.parse_args()
    if args.worker:
        work(args.worker[0], args.worker[1:])
        return
    topology = tuple((f"{args.pipeline}.{name}", n) for name, n in TOPOLOGY[args.pipeline])
    source: IO[bytes]
    with open(args.input, "rb") as source, open(args.output, "wb") as output:
        coordinate(source, output, 8192, script, topology)


if __name__ == "__main__":
    from benchmarks.seed_handwritten import coordinate

    main(__doc__.splitlines()[0], __file__, work, coordinate)
