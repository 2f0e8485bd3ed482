"""A peer pipeline hand-written on txZMQ 1.0.0 + json: benchmarks/peer_zmq.py on reactors.

The source/sink is benchmarks/seed_txzmq.py's; each worker's onPull does the stage's work on
one message of JSON lines (what one input line has become) and pushes the result.

    python benchmarks/peer_txzmq.py --pipeline text -i IN.jsonl -o OUT.jsonl
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import zmq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.peer_zmq import main, transform


def work(role: str, downstream: list[str]) -> None:
    from twisted.internet import reactor
    from txzmq import ZmqEndpoint, ZmqEndpointType, ZmqFactory, ZmqPullConnection, ZmqPushConnection

    step = transform(role)

    class Stage(ZmqPullConnection):  # type: ignore[misc]
        def __init__(self, factory: Any, endpoint: Any) -> None:
            super().__init__(factory, endpoint)
            self.output = ZmqPushConnection(factory)
            self.output.addEndpoints([ZmqEndpoint(ZmqEndpointType.connect, a) for a in downstream])

        def onPull(self, message: list[bytes]) -> None:
            self.output.push(step(message[0]))

    factory = ZmqFactory()
    stage = Stage(factory, ZmqEndpoint(ZmqEndpointType.bind, "tcp://127.0.0.1:*"))
    print(stage.socket.getsockopt_string(zmq.LAST_ENDPOINT), flush=True)
    reactor.run()  # type: ignore[attr-defined]


if __name__ == "__main__":
    from benchmarks.seed_txzmq import coordinate

    main(__doc__.splitlines()[0], __file__, work, coordinate)
