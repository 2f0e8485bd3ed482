"""A worker pool that scales up and down while work flows (seed scenario 4).

``ScalableWorkerPool`` keeps the seed's ``add_worker``, ``remove_worker`` and ``scale_to``.
One change, for correctness: each worker *binds* on ``tcp://127.0.0.1:*`` and the work
source connects to it. ZeroMQ then round-robins over every worker from the first
message (no slow-joiner race), and removing a worker first disconnects the source from
it, so no further work is routed to a worker that is leaving.

The run goes through load phases (``--phases 2 5 2``: pool sizes), each a batch of
``--items`` work items; a phase ends when the result collector has every result of the
batch, then the pool is resized for the next. Items still queued at a worker when it is
removed would be lost, which is why resizing waits for the batch to finish::

    python examples/transport/worker_pool.py [--phases 2 5 2] [--items 20] [--time-scale 1]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from twisted.internet import defer, reactor

from stageflow.transport import (
    ZmqEndpoint,
    ZmqEndpointType,
    ZmqFactory,
    ZmqPullConnection,
    ZmqPushConnection,
)

TIME_SCALE = 1.0


class ProcessingWorker(ZmqPullConnection):
    """Processes one work item at a time and pushes a result to the result sink."""

    def __init__(
        self,
        factory: ZmqFactory,
        work_endpoint: ZmqEndpoint,
        result_endpoint: ZmqEndpoint,
        worker_id: str,
    ) -> None:
        super().__init__(factory, work_endpoint)
        self.results = ZmqPushConnection(factory, result_endpoint)
        self.worker_id = worker_id
        self.processed_count = 0

    def onPull(self, message: list[bytes]) -> None:
        work_data = json.loads(message[0].decode("utf-8"))
        time.sleep(0.1 * TIME_SCALE)  # simulated processing, blocking like the seed's
        self.processed_count += 1
        print(f"{self.worker_id} processed item {work_data.get('id', 'unknown')}")
        result = {"id": work_data["id"], "worker": self.worker_id}
        self.results.push(json.dumps(result).encode("utf-8"))

    def shutdown(self) -> None:
        super().shutdown()
        self.results.shutdown()


class ResultCollector(ZmqPullConnection):
    """Counts results per item and fires a Deferred when a batch is complete."""

    def __init__(self, factory: ZmqFactory, endpoint: ZmqEndpoint) -> None:
        super().__init__(factory, endpoint)
        self.seen: dict[str, int] = {}
        self.waiting_for = 0
        self.batch_done: defer.Deferred[None] | None = None

    def expect(self, count: int) -> defer.Deferred[None]:
        self.waiting_for = len(self.seen) + count
        self.batch_done = defer.Deferred()
        return self.batch_done

    def onPull(self, message: list[bytes]) -> None:
        result = json.loads(message[0].decode("utf-8"))
        self.seen[result["id"]] = self.seen.get(result["id"], 0) + 1
        if len(self.seen) == self.waiting_for and self.batch_done is not None:
            done, self.batch_done = self.batch_done, None
            done.callback(None)


class ScalableWorkerPool:
    """Manages a pool of workers that can be dynamically scaled."""

    def __init__(
        self,
        factory: ZmqFactory,
        work_source: ZmqPushConnection,
        result_sink_address: str,
    ) -> None:
        self.factory = factory
        self.work_source = work_source
        self.result_sink = result_sink_address
        self.workers: list[ProcessingWorker] = []
        self.worker_stats: dict[str, dict[str, float]] = {}

    def add_worker(self, worker_class: type[ProcessingWorker], worker_id: str) -> None:
        """Add a new worker to the pool and start sending it work."""
        work_endpoint = ZmqEndpoint(ZmqEndpointType.bind, "tcp://127.0.0.1:*")
        result_endpoint = ZmqEndpoint(ZmqEndpointType.connect, self.result_sink)
        worker = worker_class(self.factory, work_endpoint, result_endpoint, worker_id)
        self.work_source.addEndpoints([ZmqEndpoint(ZmqEndpointType.connect, worker.addresses[0])])
        self.workers.append(worker)
        self.worker_stats[worker_id] = {"started": reactor.seconds(), "processed": 0}
        print(f"Added worker {worker_id} to pool (total: {len(self.workers)})")

    def remove_worker(self, worker_id: str) -> None:
        """Stop sending work to a worker, then shut it down."""
        for worker in self.workers:
            if worker.worker_id == worker_id:
                self.work_source.remove_endpoint(worker.addresses[0])
                worker.shutdown()
                self.workers.remove(worker)
                del self.worker_stats[worker_id]
                print(f"Removed worker {worker_id} from pool (total: {len(self.workers)})")
                break

    def scale_to(self, target_workers: int, worker_class: type[ProcessingWorker]) -> None:
        """Scale the pool to ``target_workers``, adding or removing the newest workers."""
        current_count = len(self.workers)
        if target_workers > current_count:
            for i in range(target_workers - current_count):
                self.add_worker(worker_class, f"worker_{current_count + i + 1}")
        elif target_workers < current_count:
            for _ in range(current_count - target_workers):
                self.remove_worker(self.workers[-1].worker_id)


@defer.inlineCallbacks
def monitor_and_scale(
    pool: ScalableWorkerPool, collector: ResultCollector, phases: list[int], items: int
) -> Any:
    """Run each load phase: resize the pool, send a batch, wait for all its results."""
    sent = 0
    for phase, size in enumerate(phases, start=1):
        pool.scale_to(size, ProcessingWorker)
        print(f"Phase {phase}: pool size {len(pool.workers)}", flush=True)
        batch_done = collector.expect(items)
        for _ in range(items):
            sent += 1
            work = {"id": f"item-{sent}", "task": "process"}
            pool.work_source.push(json.dumps(work).encode("utf-8"))
        yield batch_done
        shares = ", ".join(f"{w.worker_id}={w.processed_count}" for w in pool.workers)
        print(f"Phase {phase} done: {shares}", flush=True)
    return sent


def main() -> None:
    global TIME_SCALE
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phases", type=int, nargs="+", default=[2, 5, 2])
    parser.add_argument("--items", type=int, default=20, help="work items per phase")
    parser.add_argument("--time-scale", type=float, default=1.0)
    args = parser.parse_args()
    TIME_SCALE = args.time_scale

    factory = ZmqFactory()
    factory.registerForShutdown()
    collector = ResultCollector(factory, ZmqEndpoint(ZmqEndpointType.bind, "tcp://127.0.0.1:*"))
    work_source = ZmqPushConnection(factory)
    pool = ScalableWorkerPool(factory, work_source, collector.addresses[0])
    outcome: list[int] = []

    def finished(sent: int) -> None:
        once = sum(1 for count in collector.seen.values() if count == 1)
        print(f"Pool finished: {sent} items sent, {once} processed exactly once", flush=True)
        outcome.append(0 if once == sent == len(collector.seen) else 1)

    def failed(failure: Any) -> None:
        print(f"Pool failed: {failure.getErrorMessage()}", flush=True)
        outcome.append(1)

    run = monitor_and_scale(pool, collector, args.phases, args.items)
    run.addCallbacks(finished, failed).addBoth(lambda _: reactor.stop())
    reactor.run()
    sys.exit(outcome[0] if outcome else 1)


if __name__ == "__main__":
    main()
