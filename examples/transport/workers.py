"""Three pull workers in one process, each reporting what it processed (seed scenario 2).

Connects three ``Worker`` pull connections to a distributor's address, processes JSON work
items with simulated durations, prints per-worker stats every ``--stats-interval``
seconds, and exits once ``--expect`` items were processed in total::

    python examples/transport/workers.py tcp://127.0.0.1:PORT --expect 8

``--time-scale`` multiplies every simulated duration and interval (0 makes them instant);
the logic is the same at any scale.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

from twisted.internet import reactor
from twisted.internet.task import LoopingCall

from stageflow.transport import ZmqEndpoint, ZmqEndpointType, ZmqFactory, ZmqPullConnection

TIME_SCALE = 1.0


def simulate_work(seconds: float) -> None:
    # Blocking on purpose, like the seed: a worker busy with CPU work holds its reactor,
    # and ZeroMQ keeps later items queued (or hands them to the other workers).
    time.sleep(seconds * TIME_SCALE)


class Worker(ZmqPullConnection):
    """Processes work items and counts them."""

    def __init__(self, factory: ZmqFactory, endpoint: ZmqEndpoint, worker_id: str) -> None:
        super().__init__(factory, endpoint)
        self.worker_id = worker_id
        self.processed_count = 0

    def onPull(self, message: list[bytes]) -> None:
        try:
            work_data = json.loads(message[0].decode("utf-8"))
            work_id, task_type, task_data = work_data["id"], work_data["task"], work_data["data"]
            print(f"Worker {self.worker_id} processing {work_id}: {task_type}")
            handler = getattr(self, task_type, None)
            if handler is None:
                print(f"Worker {self.worker_id}: Unknown task type {task_type}")
            else:
                handler(task_data, work_id)
            self.processed_count += 1
        except Exception as error:  # noqa: BLE001 -- the seed's worker reports and goes on
            print(f"Worker {self.worker_id} error processing message: {error}")
        on_item_done()

    def process_image(self, image_path: str, work_id: str) -> None:
        simulate_work(2)
        print(f"Worker {self.worker_id}: Processed image {image_path} ({work_id})")

    def calculate_stats(self, data: list[float], work_id: str) -> None:
        result = sum(data) / len(data)
        simulate_work(1)
        print(f"Worker {self.worker_id}: Calculated average {result} ({work_id})")

    def send_email(self, email: str, work_id: str) -> None:
        simulate_work(0.5)
        print(f"Worker {self.worker_id}: Sent email to {email} ({work_id})")

    def backup_database(self, table: str, work_id: str) -> None:
        simulate_work(3)
        print(f"Worker {self.worker_id}: Backed up {table} ({work_id})")

    def generate_report(self, report_type: str, work_id: str) -> None:
        simulate_work(2.5)
        print(f"Worker {self.worker_id}: Generated {report_type} report ({work_id})")

    def health_check(self, data: str, work_id: str) -> None:
        print(f"Worker {self.worker_id}: Health check OK - {data} ({work_id})")


workers: list[Worker] = []
expected = 0


def print_stats() -> None:
    total_processed = sum(w.processed_count for w in workers)
    print("\n=== Stats ===")
    for worker in workers:
        print(f"{worker.worker_id}: {worker.processed_count} items processed")
    print(f"Total: {total_processed} items")
    print("=============\n", flush=True)


def on_item_done() -> None:
    if sum(w.processed_count for w in workers) >= expected and reactor.running:
        print_stats()
        reactor.stop()


def main() -> None:
    global TIME_SCALE, expected
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("address", help="the distributor's resolved address")
    parser.add_argument("--expect", type=int, required=True, help="items to process in total")
    parser.add_argument("--stats-interval", type=float, default=30.0)
    parser.add_argument("--time-scale", type=float, default=1.0)
    args = parser.parse_args()
    TIME_SCALE, expected = args.time_scale, args.expect

    factory = ZmqFactory()
    factory.registerForShutdown()
    endpoint = ZmqEndpoint(ZmqEndpointType.connect, args.address)
    for i in range(3):
        workers.append(Worker(factory, endpoint, f"W{i + 1}"))

    # Stats at most twice a second, so a time scale of 0 does not spin.
    stats_interval = max(args.stats_interval * TIME_SCALE, 0.5)

    def periodic_stats() -> Any:
        print_stats()
        return reactor.callLater(stats_interval, periodic_stats)

    # Started by a distributor that died, we would wait for work forever: notice the
    # re-parenting instead and stop, so no orphan is left behind.
    parent = os.getppid()

    def stop_if_orphaned() -> None:
        if os.getppid() != parent:
            print("parent process went away; stopping", flush=True)
            reactor.stop()

    LoopingCall(stop_if_orphaned).start(1.0, now=False)
    print(f"workers ready: 3 connected to {args.address}", flush=True)
    reactor.callLater(stats_interval, periodic_stats)
    reactor.run()


if __name__ == "__main__":
    main()
