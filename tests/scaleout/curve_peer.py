"""A worker-host stand-in for the CURVE tests, run inside a network namespace.

    python curve_peer.py KEYS_DIR CONTROL_ADDRESS OWN_HOST

Connects a DEALER to the coordinator's control address as a CURVE client, binds a PULL on
its own host's address as a CURVE server that admits only the coordinator, says hello with
the PULL's address and its public key, then echoes the number and total length of the
records pushed to it until it receives b"end".
"""

from __future__ import annotations

import sys

import zmq

from stageflow.security import Gatekeeper, Keys


def main() -> int:
    keys_dir, control_address, host = sys.argv[1:4]
    keys = Keys.for_worker(keys_dir)
    ctx = zmq.Context()
    gate = Gatekeeper(ctx, keys)
    control = ctx.socket(zmq.DEALER)
    control.linger = 0
    keys.connect(control)
    control.connect(control_address)
    inbox = ctx.socket(zmq.PULL)
    inbox.linger = 0
    keys.serve(inbox)
    inbox.bind(f"tcp://{host}:*")
    address = inbox.getsockopt_string(zmq.LAST_ENDPOINT)
    control.send_multipart([b"hello", address.encode(), keys.public])
    count = size = 0
    try:
        while True:
            if not inbox.poll(20_000):
                return 3  # the test gave up on us
            record = inbox.recv()
            if record == b"end":
                control.send_multipart([b"got", str(count).encode(), str(size).encode()])
                control.poll(5000, zmq.POLLOUT)
                return 0
            count += 1
            size += len(record)
    finally:
        gate.close()
        control.close(linger=1000)
        inbox.close(linger=0)
        ctx.term()


if __name__ == "__main__":
    raise SystemExit(main())
