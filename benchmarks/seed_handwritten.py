"""The seed pipeline hand-written on plain pyzmq + json: the baseline ``stageflow run`` races.

Same topology as ``stageflow run examples/seed/pipeline.yaml``::

    source/sink (this process) ─PUSH─▶ preprocess ×2 ─▶ analyze ×2 ─▶ collect ×1 ─PUSH─▶ sink

one process per worker. Every worker binds its PULL on ``tcp://127.0.0.1:*`` and prints the
address; the upstream PUSH connects to all of them. Each record is one ZeroMQ message of
compact JSON; each worker parses it with ``json``, computes the seed math
(:mod:`benchmarks.seed_math`) and serialises it with ``json`` again. There is no validation,
no batching, no acknowledgement and no restart: only the work itself. The source keeps at
most ``--max-in-flight`` records in the pipeline (stageflow's default, 8192) so memory stays
bounded, and ends the workers once every result came back.

    python benchmarks/seed_handwritten.py -i INPUT.jsonl -o OUTPUT.jsonl   # - for stdout
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO

import zmq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import seed_math

#: (role, workers), upstream first, as in examples/seed/pipeline.yaml.
TOPOLOGY = (("preprocess", 2), ("analyze", 2), ("collect", 1))
_DUMPS = json.JSONEncoder(separators=(",", ":")).encode


def work(role: str, downstream: list[str]) -> None:
    """One worker: PULL a record, do the role's math, PUSH the result. Runs until killed."""
    context = zmq.Context()
    out = context.socket(zmq.PUSH)
    for address in downstream:
        out.connect(address)
    inp = context.socket(zmq.PULL)
    inp.bind("tcp://127.0.0.1:*")
    print(inp.getsockopt_string(zmq.LAST_ENDPOINT), flush=True)
    if role == "collect":
        step = seed_math.Collector().collect
    else:
        step = {"preprocess": seed_math.preprocess, "analyze": seed_math.analyze}[role]
    recv, send, loads, dumps = inp.recv, out.send, json.loads, _DUMPS
    while True:
        send(dumps(step(loads(recv()))).encode())


Topology = tuple[tuple[str, int], ...]


def spawn_workers(
    results: str, script: str = __file__, topology: Topology = TOPOLOGY
) -> list[tuple[subprocess.Popen[bytes], str]]:
    """Start ``script --worker`` for every stage, downstream first (each needs its downstream
    addresses); return (process, inbox address) pairs, upstream first."""
    started: list[tuple[subprocess.Popen[bytes], str]] = []
    downstream = [results]
    for role, count in reversed(topology):
        stage = []
        for _ in range(count):
            proc = subprocess.Popen(
                [sys.executable, script, "--worker", role, *downstream], stdout=subprocess.PIPE
            )
            assert proc.stdout is not None
            address = proc.stdout.readline().decode().strip()
            if not address:
                for other, _ in [*started, *stage, (proc, "")]:
                    other.kill()
                raise RuntimeError(f"the {role} worker did not start (exit {proc.wait()})")
            stage.append((proc, address))
        started[:0] = stage
        downstream = [address for _, address in stage]
    return started


def coordinate(
    source: IO[bytes],
    output: IO[bytes],
    max_in_flight: int,
    script: str = __file__,
    topology: Topology = TOPOLOGY,
) -> int:
    """Feed ``source``'s lines, write every result line to ``output``; return the count.

    One result message comes back per input line; a pipeline that fans out or filters
    (benchmarks/peer_zmq.py) sends what one line became as JSON lines, possibly none."""
    context = zmq.Context()
    results = context.socket(zmq.PULL)
    results.bind("tcp://127.0.0.1:*")
    workers = spawn_workers(results.getsockopt_string(zmq.LAST_ENDPOINT), script, topology)
    feed = context.socket(zmq.PUSH)
    try:
        for _, address in workers[: topology[0][1]]:
            feed.connect(address)
        poller = zmq.Poller()
        poller.register(results, zmq.POLLIN)
        lines = (line.rstrip(b"\r\n") for line in source if line.strip())
        write = output.write
        sent = received = 0
        exhausted = False
        while not exhausted or received < sent:
            while not exhausted and sent - received < max_in_flight:
                line = next(lines, None)
                if line is None:
                    exhausted = True
                    break
                feed.send(line)
                sent += 1
            if poller.poll(50):
                while True:
                    try:
                        message = results.recv(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    if message:
                        write(message)
                        write(b"\n")
                    received += 1
        output.flush()
        return received
    finally:
        for proc, _ in workers:
            proc.terminate()
        for proc, _ in workers:
            proc.wait()
        context.destroy(linger=0)


def run_cli(
    description: str,
    work: Callable[[str, list[str]], None],
    coordinate: Callable[[IO[bytes], IO[bytes], int], None],
) -> None:
    """The command line both hand-written programs share: a coordinator, or one worker."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("-i", "--input", default="-")
    parser.add_argument("-o", "--output", default="-")
    parser.add_argument("--max-in-flight", type=int, default=8192)
    parser.add_argument("--worker", nargs="+", metavar=("ROLE", "DOWNSTREAM"))
    args = parser.parse_args()
    if args.worker:
        work(args.worker[0], args.worker[1:])
        return
    source = sys.stdin.buffer if args.input == "-" else open(args.input, "rb")  # noqa: SIM115
    output = sys.stdout.buffer if args.output == "-" else open(args.output, "wb")  # noqa: SIM115
    with source, output:
        coordinate(source, output, args.max_in_flight)


if __name__ == "__main__":
    run_cli(__doc__.splitlines()[0], work, coordinate)
