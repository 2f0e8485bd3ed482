"""A two-stage pipeline: Stage0 → Preprocessor → Analyzer → ResultsCollector (seed scenario 3).

Every stage binds its output on ``tcp://127.0.0.1:*`` and the next stage connects to the
address ZeroMQ chose, so nothing depends on a fixed port. Stage 0 pushes ``--items``
records of random values; the collector prints each result and stops the reactor once
it has them all::

    python examples/transport/pipeline.py [--items 20] [--seed 1]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from typing import Any

from twisted.internet import reactor

from stageflow.transport import (
    ZmqEndpoint,
    ZmqEndpointType,
    ZmqFactory,
    ZmqPullConnection,
    ZmqPushConnection,
)

BIND_ANY = ZmqEndpoint(ZmqEndpointType.bind, "tcp://127.0.0.1:*")


def connect_to(connection: ZmqPushConnection) -> ZmqEndpoint:
    """An endpoint connecting to where ``connection`` is bound."""
    return ZmqEndpoint(ZmqEndpointType.connect, connection.addresses[0])


class Preprocessor(ZmqPullConnection):
    """Stage 1: normalises raw values."""

    def __init__(
        self, factory: ZmqFactory, input_endpoint: ZmqEndpoint, output_endpoint: ZmqEndpoint
    ) -> None:
        super().__init__(factory, input_endpoint)
        self.output = ZmqPushConnection(factory, output_endpoint)
        # While the next stage is full, stop reading instead of buffering without end.
        self.output.registerProducer(self, streaming=True)

    def onPull(self, message: list[bytes]) -> None:
        raw_data = json.loads(message[0].decode("utf-8"))
        processed_data = {
            "id": raw_data["id"],
            "processed_at": reactor.seconds(),
            "normalized_data": self.normalize(raw_data["raw_values"]),
            "metadata": raw_data.get("metadata", {}),
        }
        self.output.push(json.dumps(processed_data).encode("utf-8"))
        print(f"Preprocessed item {processed_data['id']}")

    def normalize(self, values: list[float]) -> list[float]:
        if not values:
            return []
        max_val = max(values)
        return [v / max_val for v in values] if max_val > 0 else values


class Analyzer(ZmqPullConnection):
    """Stage 2: mean, variance and trend of the normalised values."""

    def __init__(
        self, factory: ZmqFactory, input_endpoint: ZmqEndpoint, output_endpoint: ZmqEndpoint
    ) -> None:
        super().__init__(factory, input_endpoint)
        self.output = ZmqPushConnection(factory, output_endpoint)
        self.output.registerProducer(self, streaming=True)

    def onPull(self, message: list[bytes]) -> None:
        processed_data = json.loads(message[0].decode("utf-8"))
        values = processed_data["normalized_data"]
        analysis_result = {
            "id": processed_data["id"],
            "analyzed_at": reactor.seconds(),
            "mean": self.calculate_mean(values),
            "variance": self.calculate_variance(values),
            "trend": self.detect_trend(values),
            "original_metadata": processed_data["metadata"],
        }
        self.output.push(json.dumps(analysis_result).encode("utf-8"))
        print(f"Analyzed item {analysis_result['id']}: trend={analysis_result['trend']}")

    def calculate_mean(self, values: list[float]) -> float:
        return sum(values) / len(values) if values else 0

    def calculate_variance(self, values: list[float]) -> float:
        if not values:
            return 0
        mean = self.calculate_mean(values)
        return sum((x - mean) ** 2 for x in values) / len(values)

    def detect_trend(self, values: list[float]) -> str:
        if len(values) < 2:
            return "unknown"
        return "increasing" if values[-1] > values[0] else "decreasing"


class ResultsCollector(ZmqPullConnection):
    """Final stage: keeps the results and stops the reactor when all are in."""

    def __init__(self, factory: ZmqFactory, input_endpoint: ZmqEndpoint, expected: int) -> None:
        super().__init__(factory, input_endpoint)
        self.results: list[dict[str, Any]] = []
        self.expected = expected

    def onPull(self, message: list[bytes]) -> None:
        result = json.loads(message[0].decode("utf-8"))
        self.results.append(result)
        print(
            f"Collected result {result['id']}: mean={result['mean']:.3f}, "
            f"variance={result['variance']:.3f}, trend={result['trend']}"
        )
        if len(self.results) % 10 == 0:
            print(f"Collected {len(self.results)} total results")
        if len(self.results) == self.expected:
            print(f"All {self.expected} results collected", flush=True)
            reactor.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1, help="random seed for the raw values")
    args = parser.parse_args()
    rng = random.Random(args.seed)

    factory = ZmqFactory()
    factory.registerForShutdown()
    stage0 = ZmqPushConnection(factory, BIND_ANY)
    preprocessor = Preprocessor(factory, connect_to(stage0), BIND_ANY)
    analyzer = Analyzer(factory, connect_to(preprocessor.output), BIND_ANY)
    collector = ResultsCollector(factory, connect_to(analyzer.output), args.items)
    print("Pipeline ready: Stage0 -> Preprocessor -> Analyzer -> Collector", flush=True)

    for number in range(args.items):
        raw = {
            "id": f"item-{number}",
            "raw_values": [rng.randint(0, 100) for _ in range(8)],
            "metadata": {"source": "stage0"},
        }
        stage0.push(json.dumps(raw).encode("utf-8"))
    reactor.run()
    sys.exit(0 if len(collector.results) == args.items else 1)


if __name__ == "__main__":
    main()
