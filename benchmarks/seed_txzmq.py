"""The seed pipeline hand-written on txZMQ 1.0.0 + json, the way the original seed code was.

Same topology and protocol as :mod:`benchmarks.seed_handwritten` (one record of compact JSON
per message, no validation, no batching, no acknowledgement), but every process, the
source/sink included, runs a Twisted reactor with txZMQ's ``ZmqPullConnection`` /
``ZmqPushConnection``, as /work/shared/seed/push-pull.md's Preprocessor, Analyzer and
ResultsCollector do. txZMQ's queues are unbounded (its high-water mark is 0), so the source
keeps at most ``--max-in-flight`` records in the pipeline, feeding them from the reactor in
slices so results are read while it feeds.

    python benchmarks/seed_txzmq.py -i INPUT.jsonl -o OUTPUT.jsonl   # - for stdout
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import zmq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import seed_math
from benchmarks.seed_handwritten import TOPOLOGY, Topology, run_cli, spawn_workers

_DUMPS = json.JSONEncoder(separators=(",", ":")).encode
#: Records pushed per reactor turn by the source.
_SLICE = 256


def work(role: str, downstream: list[str]) -> None:
    """One worker: onPull parses, computes and pushes, like the seed's stage classes."""
    from twisted.internet import reactor
    from txzmq import ZmqEndpoint, ZmqEndpointType, ZmqFactory, ZmqPullConnection, ZmqPushConnection

    if role == "collect":
        step = seed_math.Collector().collect
    else:
        step = {"preprocess": seed_math.preprocess, "analyze": seed_math.analyze}[role]

    class Stage(ZmqPullConnection):  # type: ignore[misc]
        def __init__(self, factory: Any, endpoint: Any) -> None:
            super().__init__(factory, endpoint)
            self.output = ZmqPushConnection(factory)
            self.output.addEndpoints([ZmqEndpoint(ZmqEndpointType.connect, a) for a in downstream])

        def onPull(self, message: list[bytes]) -> None:
            self.output.push(_DUMPS(step(json.loads(message[0]))).encode())

    factory = ZmqFactory()
    stage = Stage(factory, ZmqEndpoint(ZmqEndpointType.bind, "tcp://127.0.0.1:*"))
    print(stage.socket.getsockopt_string(zmq.LAST_ENDPOINT), flush=True)
    reactor.run()  # type: ignore[attr-defined]


def coordinate(
    source: IO[bytes],
    output: IO[bytes],
    max_in_flight: int,
    script: str = __file__,
    topology: Topology = TOPOLOGY,
) -> int:
    """Feed ``source``'s lines, write every result line to ``output``; return the count.

    As in :func:`benchmarks.seed_handwritten.coordinate`, one result message comes back per
    input line, holding what it became as JSON lines (possibly none)."""
    from twisted.internet import reactor
    from txzmq import ZmqEndpoint, ZmqEndpointType, ZmqFactory, ZmqPullConnection, ZmqPushConnection

    lines: Iterator[bytes] = (line.rstrip(b"\r\n") for line in source if line.strip())
    state = {"sent": 0, "received": 0, "exhausted": False, "feeding": None}
    write = output.write

    class Sink(ZmqPullConnection):  # type: ignore[misc]
        def onPull(self, message: list[bytes]) -> None:
            if message[0]:
                write(message[0])
                write(b"\n")
            state["received"] += 1
            if state["exhausted"] and state["received"] == state["sent"]:
                reactor.stop()
            elif state["feeding"] is None and not state["exhausted"]:
                state["feeding"] = reactor.callLater(0, feed)

    def feed() -> None:
        state["feeding"] = None
        push = feeder.push
        room = min(_SLICE, max_in_flight - (state["sent"] - state["received"]))
        for _ in range(room):
            line = next(lines, None)
            if line is None:
                state["exhausted"] = True
                if state["received"] == state["sent"]:
                    reactor.stop()
                return
            push(line)
            state["sent"] += 1
        if room == _SLICE:
            state["feeding"] = reactor.callLater(0, feed)

    factory = ZmqFactory()
    sink = Sink(factory, ZmqEndpoint(ZmqEndpointType.bind, "tcp://127.0.0.1:*"))
    workers = spawn_workers(sink.socket.getsockopt_string(zmq.LAST_ENDPOINT), script, topology)
    try:
        feeder = ZmqPushConnection(factory)
        feeder.addEndpoints(
            [ZmqEndpoint(ZmqEndpointType.connect, a) for _, a in workers[: topology[0][1]]]
        )
        reactor.callWhenRunning(feed)
        reactor.run()  # type: ignore[attr-defined]
        output.flush()
        return state["received"]
    finally:
        for proc, _ in workers:
            proc.terminate()
        for proc, _ in workers:
            proc.wait()


if __name__ == "__main__":
    run_cli(__doc__.splitlines()[0], work, coordinate)
