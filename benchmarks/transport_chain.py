"""Transport throughput: a 3-hop PUSH/PULL chain, PUB/SUB fan-out and REQ/REP round trips.

Every pattern runs across processes over tcp loopback, and each is measured for stageflow,
txZMQ 1.0.0 and plain pyzmq (the ``bench`` extra installs txZMQ).

**Chain**::

    source ──▶ forwarder 1 ──▶ forwarder 2 ──▶ forwarder 3 ──▶ sink

The source (a plain pyzmq process) and the sink (this process) are the same for every
variant; only the three forwarder processes change:

    stageflow   stageflow.transport pull→push, the push registered as the pull's consumer
    stageflow-single  the same with ``singleFrame = True``
    pyzmq       a plain blocking loop: ``out.send(inp.recv())`` (single frames only)
    pyzmq-multipart  the plain loop that keeps multipart messages whole, as the others do:
                ``out.send_multipart(inp.recv_multipart())``
    txzmq       txZMQ 1.0.0 pull→push, the same code as the stageflow forwarder

The sink times first-to-last message, with the CPU time each forwarder spent per message
(all its threads, start-up excluded), which a busy machine disturbs much less than
wall-clock throughput.

**PUB/SUB fan-out**: one plain pyzmq publisher sends ``tag\\0payload`` messages (txZMQ's
framing) to three subscriber processes of the variant; the rate is the slowest
subscriber's, first to last message, and the CPU is per message per subscriber.

**REQ/REP**: a requester process sends requests to a replier process, both of the variant
(plain pyzmq uses DEALER/ROUTER with txZMQ's ``[id, b"", payload]`` framing, as
ZmqREQConnection/ZmqREPConnection do), with one request in flight (the round-trip rate)
and with 32 in flight; the CPU is both processes' per request.

Each forwarder, publisher and replier binds on ``tcp://127.0.0.1:*`` and prints the
address, so no port is fixed. The best and the median of ``--runs`` runs are reported;
variants take turns within each round. Run on demand (it is not a test)::

    .venv/bin/python benchmarks/transport_chain.py [--messages 300000] [--runs 3]
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import select
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import psutil
import zmq

HOPS = 3
PAYLOAD = b"x" * 300
VARIANTS = ("stageflow", "stageflow-single", "pyzmq", "pyzmq-multipart", "txzmq")
PATTERNS = ("chain", "pubsub", "reqrep")


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


PUBSUB_VARIANTS = ("stageflow", "pyzmq", "txzmq")
SUBSCRIBERS = 3
INFLIGHT = (1, 32)


def transport_module(variant: str) -> Any:
    """The module with the txZMQ API for ``variant``: stageflow.transport or txzmq."""
    return importlib.import_module("txzmq" if variant == "txzmq" else "stageflow.transport")


def bound_address(connection: Any) -> str:
    # txZMQ binds the literal address, so a wildcard port is read back from the socket.
    return str(connection.socket.getsockopt_string(zmq.LAST_ENDPOINT))


def run_publisher(messages: int) -> None:
    """Publish warm-ups until stdin says go, then ``messages`` data messages."""
    context = zmq.Context()
    pub = context.socket(zmq.PUB)
    pub.setsockopt(zmq.SNDHWM, 0)
    pub.bind("tcp://127.0.0.1:*")
    announce(pub.getsockopt_string(zmq.LAST_ENDPOINT))
    # Warm-ups until every subscriber has seen one: its subscription is then live.
    while not select.select([sys.stdin], [], [], 0.001)[0]:
        pub.send(b"w\0")
    sys.stdin.readline()
    send, message = pub.send, b"d\0" + PAYLOAD
    for _ in range(messages):
        send(message)
    sys.stdin.readline()  # the measuring process closes stdin once all have arrived
    pub.close(linger=0)
    context.term()


def report_done(started: float, cpu_started: float) -> None:
    print(f"{time.perf_counter() - started} {time.process_time() - cpu_started}", flush=True)


def subscribe_with_pyzmq(address: str, messages: int) -> None:
    context = zmq.Context()
    sub = context.socket(zmq.SUB)
    sub.setsockopt(zmq.RCVHWM, 0)
    sub.connect(address)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    recv = sub.recv
    recv()  # a warm-up: data only follows once every subscriber is ready
    announce("ready")
    while recv().split(b"\0", 1)[0] == b"w":
        pass
    started, cpu_started = time.perf_counter(), time.process_time()
    for _ in range(messages - 1):
        recv().split(b"\0", 1)
    report_done(started, cpu_started)


def subscribe_with_reactor(variant: str, address: str, messages: int) -> None:
    from twisted.internet import reactor

    api = transport_module(variant)

    class Subscriber(api.ZmqSubConnection):  # type: ignore[misc,name-defined]
        highWaterMark = 0  # txZMQ's default: a benchmark publisher must not lose messages
        count = 0
        started = cpu_started = 0.0

        def gotMessage(self, message: bytes, tag: bytes) -> None:
            if tag == b"w":
                if not self.count:
                    self.count = -1
                    announce("ready")
                return
            if self.count <= 0:
                self.count = 0
                self.started, self.cpu_started = time.perf_counter(), time.process_time()
            self.count += 1
            if self.count == messages:
                report_done(self.started, self.cpu_started)
                reactor.stop()  # type: ignore[attr-defined]

    factory = api.ZmqFactory()
    factory.registerForShutdown()
    sub = Subscriber(factory, api.ZmqEndpoint(api.ZmqEndpointType.connect, address))
    sub.subscribe(b"")
    reactor.run()  # type: ignore[attr-defined]


def serve_with_pyzmq() -> None:
    context = zmq.Context()
    router = context.socket(zmq.ROUTER)
    router.bind("tcp://127.0.0.1:*")
    announce(router.getsockopt_string(zmq.LAST_ENDPOINT))
    recv, send = router.recv_multipart, router.send_multipart
    while True:
        send(recv())


def request_with_pyzmq(address: str, requests: int, inflight: int) -> None:
    context = zmq.Context()
    dealer = context.socket(zmq.DEALER)
    dealer.connect(address)
    recv, send = dealer.recv_multipart, dealer.send_multipart
    started, cpu_started = time.perf_counter(), time.process_time()
    for number in range(min(inflight, requests)):
        send([b"%d" % number, b"", PAYLOAD])
    for number in range(inflight, requests + inflight):
        recv()
        if number < requests:
            send([b"%d" % number, b"", PAYLOAD])
    report_done(started, cpu_started)


def serve_with_reactor(variant: str) -> None:
    from twisted.internet import reactor

    api = transport_module(variant)

    class Echo(api.ZmqREPConnection):  # type: ignore[misc,name-defined]
        def gotMessage(self, messageId: bytes, *messageParts: bytes) -> None:
            self.reply(messageId, *messageParts)

    factory = api.ZmqFactory()
    factory.registerForShutdown()
    server = Echo(factory, api.ZmqEndpoint(api.ZmqEndpointType.bind, "tcp://127.0.0.1:*"))
    announce(bound_address(server))
    reactor.run()  # type: ignore[attr-defined]


def request_with_reactor(variant: str, address: str, requests: int, inflight: int) -> None:
    from twisted.internet import reactor

    api = transport_module(variant)
    factory = api.ZmqFactory()
    factory.registerForShutdown()
    client = api.ZmqREQConnection(factory, api.ZmqEndpoint(api.ZmqEndpointType.connect, address))
    state = {"sent": 0, "replied": 0}
    started, cpu_started = time.perf_counter(), time.process_time()

    def send_next() -> None:
        if state["sent"] < requests:
            state["sent"] += 1
            client.sendMsg(PAYLOAD).addCallback(replied)

    def replied(reply: list[bytes]) -> None:
        state["replied"] += 1
        if state["replied"] == requests:
            report_done(started, cpu_started)
            reactor.stop()  # type: ignore[attr-defined]
        else:
            send_next()

    for _ in range(inflight):
        reactor.callWhenRunning(send_next)  # type: ignore[attr-defined]
    reactor.run()  # type: ignore[attr-defined]


def read_done(process: subprocess.Popen[str]) -> tuple[float, float]:
    """The (elapsed, CPU seconds) line a measured peer prints when it is done."""
    assert process.stdout is not None
    elapsed, cpu = process.stdout.readline().split()
    return float(elapsed), float(cpu)


def stop(
    processes: list[subprocess.Popen[str]], finishing: Sequence[subprocess.Popen[str]] = ()
) -> None:
    """Terminate ``processes``, letting those that are ``finishing`` on their own exit first."""
    for process in finishing:
        process.wait(timeout=10)
    for process in processes:
        if process.poll() is None:
            process.terminate()
    for process in processes:
        process.wait(timeout=10)


def measure_pubsub(variant: str, messages: int) -> Result:
    """Fan-out rate to the slowest of the subscribers, and CPU per message per subscriber."""
    publisher = subprocess.Popen(
        [sys.executable, __file__, "--publisher", str(messages)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    processes = [publisher]
    try:
        assert publisher.stdout is not None and publisher.stdin is not None
        address = publisher.stdout.readline().strip()
        subscribers = [
            spawn("--subscriber", variant, address, str(messages)) for _ in range(SUBSCRIBERS)
        ]
        processes += subscribers
        for subscriber in subscribers:
            assert subscriber.stdout is not None
            subscriber.stdout.readline()  # "ready"
        publisher.stdin.write("go\n")
        publisher.stdin.flush()
        done = [read_done(subscriber) for subscriber in subscribers]
        publisher.stdin.close()
        stop(processes, finishing=subscribers)
    finally:
        stop(processes)
    slowest = max(elapsed for elapsed, _ in done)
    cpu = sum(cpu for _, cpu in done) / SUBSCRIBERS
    return Result((messages - 1) / slowest, cpu / messages * 1e6)


def measure_reqrep(variant: str, requests: int, inflight: int) -> Result:
    """Requests per second with ``inflight`` outstanding, and CPU per request (both sides)."""
    server = spawn("--replier", variant)
    processes = [server]
    try:
        assert server.stdout is not None
        address = server.stdout.readline().strip()
        server_cpu = cpu_seconds(server.pid)
        client = spawn("--requester", variant, address, str(requests), str(inflight))
        processes.append(client)
        elapsed, client_cpu = read_done(client)
        server_cpu = cpu_seconds(server.pid) - server_cpu
        stop(processes, finishing=[client])
    finally:
        stop(processes)
    return Result(requests / elapsed, (client_cpu + server_cpu) / requests * 1e6)


def report(title: str, unit: str, per: str, results: dict[str, list[Result]]) -> None:
    """Print one pattern's table and stageflow's ratios to the other variants."""
    print(f"\n{title}")
    best = {variant: max(r.rate for r in found) for variant, found in results.items()}
    medians = {v: statistics.median(r.rate for r in found) for v, found in results.items()}
    cpu = {v: statistics.median(r.cpu_per_message for r in found) for v, found in results.items()}
    print(f"{'variant':16s} {'best ' + unit:>12s} {'median':>10s} {'CPU/' + per:>12s}   runs")
    for variant, found in results.items():
        spread = ", ".join(f"{r.rate:,.0f}" for r in found)
        print(
            f"{variant:16s} {best[variant]:>12,.0f} {medians[variant]:>10,.0f} "
            f"{cpu[variant]:>9.2f} us   {spread}"
        )
    for ours in ("stageflow", "stageflow-single"):
        for other in ("pyzmq", "pyzmq-multipart", "txzmq"):
            if ours in best and other in best:
                print(
                    f"{ours} vs {other}: throughput {best[ours] / best[other]:.2f}x "
                    f"(best), {medians[ours] / medians[other]:.2f}x (median); "
                    f"CPU per message {cpu[ours] / cpu[other]:.2f}x"
                )


def rounds(
    runs: int, variants: Sequence[str], run: Callable[[str], Result]
) -> dict[str, list[Result]]:
    # Variants take turns within each round, so a change in machine load during the run
    # hits them alike instead of skewing whichever variant ran at that moment.
    results: dict[str, list[Result]] = {variant: [] for variant in variants}
    for _ in range(runs):
        for variant in variants:
            results[variant].append(run(variant))
    return results


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
    parser.add_argument("--messages", type=int, default=300_000, help="chain messages")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument(
        "--patterns", nargs="+", choices=PATTERNS, default=list(PATTERNS), help="what to measure"
    )
    parser.add_argument("--forwarder", nargs=2, metavar=("VARIANT", "DOWNSTREAM"))
    parser.add_argument("--source", nargs=2, metavar=("UPSTREAM", "MESSAGES"))
    parser.add_argument("--publisher", metavar="MESSAGES")
    parser.add_argument("--subscriber", nargs=3, metavar=("VARIANT", "ADDRESS", "MESSAGES"))
    parser.add_argument("--replier", metavar="VARIANT")
    parser.add_argument("--requester", nargs=4, metavar=("VARIANT", "ADDRESS", "N", "INFLIGHT"))
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
    if args.publisher:
        run_publisher(int(args.publisher))
        return
    if args.subscriber:
        variant, address, count = args.subscriber
        if variant == "pyzmq":
            subscribe_with_pyzmq(address, int(count))
        else:
            subscribe_with_reactor(variant, address, int(count))
        return
    if args.replier:
        serve_with_pyzmq() if args.replier == "pyzmq" else serve_with_reactor(args.replier)
        return
    if args.requester:
        variant, address, count, inflight = args.requester
        if variant == "pyzmq":
            request_with_pyzmq(address, int(count), int(inflight))
        else:
            request_with_reactor(variant, address, int(count), int(inflight))
        return

    print(describe_machine())
    if "chain" in args.patterns:
        report(
            f"{HOPS}-hop chain, {args.messages} messages of {len(PAYLOAD)} bytes, "
            f"best of {args.runs}",
            "msgs/s",
            "msg/hop",
            rounds(args.runs, args.variants, lambda variant: measure(variant, args.messages)),
        )
    others = [v for v in args.variants if v in PUBSUB_VARIANTS]
    if "pubsub" in args.patterns:
        fan_out = max(2, args.messages // 3)
        report(
            f"PUB/SUB fan-out to {SUBSCRIBERS} subscribers, {fan_out} messages of "
            f"{len(PAYLOAD)} bytes, best of {args.runs} (rate of the slowest subscriber)",
            "msgs/s",
            "msg/sub",
            rounds(args.runs, others, lambda variant: measure_pubsub(variant, fan_out)),
        )
    if "reqrep" in args.patterns:
        for inflight in INFLIGHT:
            requests = max(2, args.messages // (30 if inflight == 1 else 6))
            report(
                f"REQ/REP, {requests} requests of {len(PAYLOAD)} bytes, {inflight} in flight, "
                f"best of {args.runs} (CPU: requester and replier together)",
                "reqs/s",
                "req",
                rounds(
                    args.runs,
                    others,
                    lambda variant, n=requests, w=inflight: measure_reqrep(variant, n, w),
                ),
            )


if __name__ == "__main__":
    main()
