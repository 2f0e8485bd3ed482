"""A work distributor feeding three workers (seed scenario 1).

Binds a PUSH socket on ``tcp://127.0.0.1:*`` (no fixed port), starts ``workers.py`` in a
child process with the address ZeroMQ chose, then distributes the seed's work queue and
``--health-checks`` periodic health checks, one every ``--interval`` seconds. It exits
with the workers' exit status once they have processed everything::

    python examples/transport/work_distributor.py [--health-checks 3] [--interval 10]

``--time-scale`` multiplies every simulated duration and interval (0 makes them instant),
here and in the workers; the logic is the same at any scale.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import uuid
from pathlib import Path
from typing import Any

from twisted.internet import protocol, reactor

from stageflow.transport import ZmqEndpoint, ZmqEndpointType, ZmqFactory, ZmqPushConnection

WORK_QUEUE: list[dict[str, Any]] = [
    {"task": "process_image", "data": "image1.jpg"},
    {"task": "calculate_stats", "data": [1, 2, 3, 4, 5]},
    {"task": "send_email", "data": "user@example.com", "priority": "high"},
    {"task": "backup_database", "data": "table_users"},
    {"task": "generate_report", "data": "monthly_sales"},
]


class WorkDistributor:
    """Pushes work items, each with a unique id, to whichever workers are connected."""

    def __init__(self, factory: ZmqFactory, bind_address: str) -> None:
        endpoint = ZmqEndpoint(ZmqEndpointType.bind, bind_address)
        self.pusher = ZmqPushConnection(factory, endpoint)

    def distribute_work(self, work_items: list[dict[str, Any]]) -> None:
        for item in work_items:
            work_package = {
                "id": str(uuid.uuid4()),
                "task": item["task"],
                "data": item["data"],
                "priority": item.get("priority", "normal"),
            }
            self.pusher.push(json.dumps(work_package).encode("utf-8"))
            print(f"Sent work item {work_package['id']}: {work_package['task']}", flush=True)


class WorkersProcess(protocol.ProcessProtocol):
    """Relays the workers' output and calls back when they are ready and when they end."""

    def __init__(self, on_ready: Any, on_exit: Any) -> None:
        self.on_ready, self.on_exit = on_ready, on_exit
        self.pending = b""

    def outReceived(self, data: bytes) -> None:
        self.pending += data
        *lines, self.pending = self.pending.split(b"\n")
        for line in lines:
            text = line.decode()
            print(f"[workers] {text}", flush=True)
            if text.startswith("workers ready"):
                self.on_ready()

    def processEnded(self, reason: Any) -> None:
        self.on_exit(reason.value.exitCode or 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--health-checks", type=int, default=3)
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between checks")
    parser.add_argument("--time-scale", type=float, default=1.0)
    args = parser.parse_args()

    factory = ZmqFactory()
    distributor = WorkDistributor(factory, "tcp://127.0.0.1:*")
    address = distributor.pusher.addresses[0]
    print(f"Distributing on {address}", flush=True)
    exit_status = [1]
    checks_left = [args.health_checks]

    def generate_periodic_work() -> None:
        work_item = {"task": "health_check", "data": f"timestamp_{reactor.seconds()}"}
        distributor.distribute_work([work_item])
        checks_left[0] -= 1
        if checks_left[0] > 0:
            reactor.callLater(args.interval * args.time_scale, generate_periodic_work)

    def start_distributing() -> None:
        distributor.distribute_work(WORK_QUEUE)
        if checks_left[0] > 0:
            generate_periodic_work()

    def workers_exited(status: int) -> None:
        exit_status[0] = status
        factory.shutdown()
        reactor.stop()

    workers_script = Path(__file__).with_name("workers.py")
    reactor.spawnProcess(
        WorkersProcess(start_distributing, workers_exited),
        sys.executable,
        [
            sys.executable,
            str(workers_script),
            address,
            "--expect",
            str(len(WORK_QUEUE) + args.health_checks),
            "--time-scale",
            str(args.time_scale),
        ],
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        childFDs={0: "w", 1: "r", 2: 2},
    )
    reactor.run()
    sys.exit(exit_status[0])


if __name__ == "__main__":
    main()
