"""Prometheus metrics of a run, served on ``/metrics`` with prometheus_client.

A custom collector turns the latest :class:`~stageflow.observe.snapshot.Progress` into
metric families at scrape time, in the scraping thread: the engine's loop pays nothing
for metrics beyond the snapshot it takes four times a second anyway, and a scrape never
touches live engine state. Every series carries a ``pipeline`` label.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from stageflow.engine.timing import BUCKETS_PER_DOUBLING
from stageflow.errors import StageflowError

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric
    from prometheus_client.registry import CollectorRegistry

    from stageflow.observe.snapshot import Progress
    from stageflow.observe.watch import Watch

__all__ = ["LATENCY_BUCKETS", "Metrics", "MetricsError", "parse_address"]

_POWERS = range(9, 26)
#: Upper bounds (seconds) of the latency histogram: 2**9 µs (0.5 ms) to 2**25 µs (34 s),
#: each an edge of the engine's time buckets, so the cumulative counts are exact.
LATENCY_BUCKETS = tuple(2**power / 1e6 for power in _POWERS)


class MetricsError(StageflowError):
    """Metrics were asked for but cannot be served (no prometheus_client, a bad address)."""


def parse_address(address: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[V6]:PORT``, ``:PORT`` or ``PORT`` (loopback) as (host, port)."""
    host, _, port_text = address.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    try:
        port = int(port_text)
    except ValueError:
        port = -1
    if not 0 <= port < 65536:
        raise MetricsError(
            f"metrics address {address!r} has no valid port; give HOST:PORT, e.g. "
            "127.0.0.1:9464 (port 0 picks a free one)"
        )
    return host, port


class Metrics:
    """A registry with the run's metrics, served over HTTP when given an address.

    ``Metrics("127.0.0.1:0")`` serves on a free loopback port (see :attr:`url`);
    ``Metrics(None, registry)`` only adds the collector to an existing registry, for a
    program that already serves ``/metrics``. Pass it as ``pipeline.run(..., metrics=m)``;
    one Metrics can serve several runs one after another. :meth:`close` stops it.
    """

    def __init__(
        self, address: str | None = "127.0.0.1:0", registry: CollectorRegistry | None = None
    ) -> None:
        try:
            from prometheus_client import start_http_server
            from prometheus_client.registry import CollectorRegistry
        except ImportError as exc:
            raise MetricsError(
                "metrics need the prometheus_client package; install it with "
                "`pip install 'stageflow[metrics]'`"
            ) from exc
        self.registry = registry if registry is not None else CollectorRegistry()
        self._collector = _RunCollector()
        self.registry.register(self._collector)
        self.url: str | None = None
        self._server = None
        if address is not None:
            host, port = parse_address(address)
            try:
                self._server, self._thread = start_http_server(port, host, self.registry)
            except OSError as exc:
                self.registry.unregister(self._collector)
                raise MetricsError(
                    f"cannot serve metrics on {address!r}: {exc.strerror or exc}; "
                    "choose another address or port (port 0 picks a free one)"
                ) from exc
            shown = f"[{host}]" if ":" in host else host
            self.url = f"http://{shown}:{self._server.server_port}/metrics"

    def watch(self, watch: Watch) -> None:
        """Serve the snapshots of ``watch`` (the run being iterated) from now on."""
        self._collector.watch = watch

    def close(self) -> None:
        """Stop serving and leave the registry as it was."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join()
            self._server = None
        self.registry.unregister(self._collector)


class _RunCollector:
    """Yields the metric families of the latest snapshot."""

    def __init__(self) -> None:
        self.watch: Watch | None = None

    def collect(self) -> Iterator[Metric]:
        snapshot = self.watch.latest if self.watch is not None else None
        if snapshot is not None:
            yield from _families(snapshot)


def _families(p: Progress) -> Iterator[Metric]:
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
    )

    name = [p.pipeline]

    def counter(metric: str, doc: str, value: float) -> CounterMetricFamily:
        family = CounterMetricFamily(metric, doc, labels=["pipeline"])
        family.add_metric(name, value)
        return family

    yield counter("stageflow_records_in", "Input records read.", p.records_in)
    yield counter("stageflow_results", "Results written (the last stage's outputs).", p.results)
    dead = CounterMetricFamily(
        "stageflow_dead_letters", "Records dead-lettered.", labels=["pipeline", "stage", "error"]
    )
    for stage_name, error, count in p.dead_letters:
        dead.add_metric([p.pipeline, stage_name, error], count)
    yield dead
    in_flight = GaugeMetricFamily(
        "stageflow_in_flight_records", "Input records being processed.", labels=["pipeline"]
    )
    in_flight.add_metric(name, p.in_flight)
    yield in_flight

    records = CounterMetricFamily(
        "stageflow_stage_records", "Records a stage processed.", labels=["pipeline", "stage"]
    )
    busy = CounterMetricFamily(
        "stageflow_stage_busy_seconds",
        "Seconds a stage's workers spent inside process().",
        labels=["pipeline", "stage"],
    )
    workers = GaugeMetricFamily(
        "stageflow_workers", "A stage's workers that are up.", labels=["pipeline", "stage"]
    )
    restarts = CounterMetricFamily(
        "stageflow_worker_restarts",
        "Workers of a stage that died and were restarted.",
        labels=["pipeline", "stage"],
    )
    for stage in p.stages:
        labels = [p.pipeline, stage.name]
        records.add_metric(labels, stage.processed)
        busy.add_metric(labels, stage.busy_seconds)
        workers.add_metric(labels, stage.ready_workers)
        restarts.add_metric(labels, stage.restarts)
    yield from (records, busy, workers, restarts)

    counts = dict(p.latency)
    cumulative: list[tuple[str, float]] = []
    seen = 0
    edges = [power * BUCKETS_PER_DOUBLING for power in _POWERS]
    pending = sorted(counts)
    for bound, edge in zip(LATENCY_BUCKETS, edges, strict=True):
        while pending and pending[0] < edge:
            seen += counts[pending.pop(0)]
        cumulative.append((repr(bound), seen))
    cumulative.append(("+Inf", sum(counts.values())))
    histogram = HistogramMetricFamily(
        "stageflow_record_latency_seconds",
        "Seconds from reading an input record to handing its results to the writer.",
        labels=["pipeline"],
    )
    histogram.add_metric(name, cumulative, sum_value=p.latency_seconds)
    yield histogram
