"""Throughput of a 3-hop PUSH/PULL forward chain across processes over tcp loopback.

    source ──▶ forwarder 1 ──▶ forwarder 2 ──▶ forwarder 3 ──▶ sink

The source (a plain pyzmq process) and the sink (this process) are the same for every
variant; only the three forwarder processes change:

    stageflow   stageflow.transport pull→push, the push registered as the pull's consumer
    pyzmq       a plain blocking loop: ``out.send(inp.recv())`` (single frames only)
    pyzmq-multipart  the plain loop that keeps multipart messages whole, as the others do:
                ``out.send_multipart(inp.recv_multipart())``
    txzmq       txZMQ 1.0.0 pull→push, the same code as the stageflow forwarder

Each forwarder binds its input on ``tcp://127.0.0.1:*`` and prints the address, so no port
is fixed. The sink times first-to-last message; the best and the median of ``--runs``
runs are reported, with the CPU time each forwarder spent per message (all its threads,
start-up excluded), which a busy machine disturbs much less than wall-clock throughput.

Run on demand (it is not a test)::

    .venv/bin/python benchmarks/transport_chain.py [--messages 300000] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from typing import NamedTuple

import psutil
import zmq

HOPS = 3
PAYLOAD = b"x" * 300
VARIANTS = ("stageflow", "stageflow-single", "pyzmq", "pyzmq-multipart", "txzmq")


def forward_with_pyzmq(downstream: str, multipart: bool = False) -> None:
    context = zmq.Context()
    inp = context.socket(zmq.PULL)
    out = context.socket(zmq.PUSH)
    out.connect(downstream)
    inp.bind("tcp://127.0.0.1:*")
    announce(inp.getsockopt_string(zmq.LAST_ENDPOINT))
    if multipart:
        recv_multipart, send_multipart = inp.recv_multipart, out.send_multipart
        while True:
            send_multipart(recv_multipart())
    recv, send = inp.recv, out.send
    while True:
        send(recv())


def forward_with_stageflow(downstream: str, single_frame: bool = False) -> None:
    from twisted.internet import reactor

    from stageflow.transport import (
        ZmqEndpoint,
        ZmqEndpointType,
        ZmqFactory,
        ZmqPullConnection,
        ZmqPushConnection,
    )

    class Forwarder(ZmqPullConnection):
        def __init__(self, factory: ZmqFactory, endpoint: ZmqEndpoint, out: str) -> None:
            super().__init__(factory, endpoint)
            self.out = ZmqPushConnection(factory, ZmqEndpoint(ZmqEndpointType.connect, out))
            self.out.registerProducer(self, streaming=True)

        def onPull(self, message: list[bytes]) -> None:
            self.out.push(message)

    Forwarder.singleFrame = single_frame
    factory = ZmqFactory()
    forwarder = Forwarder(
        factory, ZmqEndpoint(ZmqEndpointType.bind, "tcp://127.0.0.1:*"), downstream
    )
    announce(forwarder.addresses[0])
    reactor.run()  # type: ignore[attr-defined]


def forward_with_txzmq(downstream: str) -> None:
    from twisted.internet import reactor
    from txzmq import (
        ZmqEndpoint,
        ZmqEndpointType,
        ZmqFactory,
        ZmqPullConnection,
        ZmqPushConnection,
    )

    class Forwarder(ZmqPullConnection):  # type: ignore[misc]
        def __init__(self, factory: ZmqFactory, endpoint: ZmqEndpoint, out: str) -> None:
            super().__init__(factory, endpoint)
            self.out = ZmqPushConnection(factory, ZmqEndpoint(ZmqEndpointType.connect, out))

        def onPull(self, message: list[bytes]) -> None:
            self.out.push(message)

    factory = ZmqFactory()
    # txZMQ binds the literal address, so a wildcard port is read back from the socket.
    forwarder = Forwarder(
        factory, ZmqEndpoint(ZmqEndpointType.bind, "tcp://127.0.0.1:*"), downstream
    )
    announce(forwarder.socket.getsockopt_string(zmq.LAST_ENDPOINT))
    reactor.run()  # type: ignore[attr-defined]


def run_source(upstream: str, messages: int) -> None:
    context = zmq.Context()
    out = context.socket(zmq.PUSH)
    out.connect(upstream)
    send = out.send
    for _ in range(messages):
        send(PAYLOAD)
    out.close(linger=-1)
    context.term()


def announce(address: str) -> None:
    print(address, flush=True)


def spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, __file__, *args], stdout=subprocess.PIPE, text=True)


class Result(NamedTuple):
    rate: float
    """Messages per second, first to last message at the sink."""
    cpu_per_message: float
    """Microseconds of CPU (all threads, user + system) one forwarder spends per message."""


def cpu_seconds(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def measure(variant: str, messages: int) -> Result:
    """Throughput of the chain built with ``variant`` forwarders, and their CPU cost."""
    context = zmq.Context()
    sink = context.socket(zmq.PULL)
    sink.bind("tcp://127.0.0.1:*")
    downstream = sink.getsockopt_string(zmq.LAST_ENDPOINT)
    forwarders: list[subprocess.Popen[str]] = []
    processes: list[subprocess.Popen[str]] = []
    try:
        for _ in range(HOPS):
            forwarder = spawn("--forwarder", variant, downstream)
            forwarders.append(forwarder)
            processes.append(forwarder)
            assert forwarder.stdout is not None
            downstream = forwarder.stdout.readline().strip()
        # Start-up (imports, binding) is not the forwarding cost: count from here.
        cpu_before = sum(cpu_seconds(f.pid) for f in forwarders)
        processes.append(spawn("--source", downstream, str(messages)))
        recv = sink.recv
        recv()
        started = time.perf_counter()
        for _ in range(messages - 1):
            recv()
        elapsed = time.perf_counter() - started
        cpu_used = sum(cpu_seconds(f.pid) for f in forwarders) - cpu_before
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=10)
        sink.close(linger=0)
        context.term()
    return Result((messages - 1) / elapsed, cpu_used / HOPS / messages * 1e6)


def describe_machine() -> str:
    import twisted

    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return (
        f"nproc {os.cpu_count()}, {model}; Python {platform.python_version()}, "
        f"pyzmq {zmq.__version__} (libzmq {zmq.zmq_version()}), Twisted {twisted.__version__}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=300_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--forwarder", nargs=2, metavar=("VARIANT", "DOWNSTREAM"))
    parser.add_argument("--source", nargs=2, metavar=("UPSTREAM", "MESSAGES"))
    args = parser.parse_args()
    if args.forwarder:
        variant, downstream = args.forwarder
        {
            "stageflow": forward_with_stageflow,
            "stageflow-single": lambda downstream: forward_with_stageflow(
                downstream, single_frame=True
            ),
            "pyzmq": forward_with_pyzmq,
            "pyzmq-multipart": lambda downstream: forward_with_pyzmq(downstream, multipart=True),
            "txzmq": forward_with_txzmq,
        }[variant](downstream)
        return
    if args.source:
        run_source(args.source[0], int(args.source[1]))
        return

    print(describe_machine())
    print(
        f"{HOPS}-hop chain, {args.messages} messages of {len(PAYLOAD)} bytes, best of {args.runs}"
    )
    # Variants take turns within each round, so a change in machine load during the run
    # hits them alike instead of skewing whichever variant ran at that moment.
    results: dict[str, list[Result]] = {variant: [] for variant in args.variants}
    for _ in range(args.runs):
        for variant in args.variants:
            results[variant].append(measure(variant, args.messages))
    best = {variant: max(r.rate for r in found) for variant, found in results.items()}
    medians = {
        variant: statistics.median(r.rate for r in found) for variant, found in results.items()
    }
    cpu = {
        variant: statistics.median(r.cpu_per_message for r in found)
        for variant, found in results.items()
    }
    print(f"{'variant':16s} {'best msgs/s':>12s} {'median':>10s} {'CPU/msg/hop':>12s}   runs")
    for variant, found in results.items():
        spread = ", ".join(f"{r.rate:,.0f}" for r in found)
        print(
            f"{variant:16s} {best[variant]:>12,.0f} {medians[variant]:>10,.0f} "
            f"{cpu[variant]:>9.2f} us   {spread}"
        )
    for ours in ("stageflow", "stageflow-single"):
        if ours not in best:
            continue
        for other in ("pyzmq", "pyzmq-multipart", "txzmq"):
            if other in best:
                print(
                    f"{ours} vs {other}: throughput {best[ours] / best[other]:.2f}x "
                    f"(best), {medians[ours] / medians[other]:.2f}x (median); "
                    f"CPU per message {cpu[ours] / cpu[other]:.2f}x"
                )


if __name__ == "__main__":
    main()
