"""The object :meth:`stageflow.Pipeline.run` returns: an iterator of results with a report."""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
import time
import weakref
from collections.abc import Callable, Generator, Iterable, Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from pydantic import BaseModel

from stageflow.engine.coordinator import WAIT, Coordinator, EngineOptions
from stageflow.engine.report import RunReport, WorkerStatus
from stageflow.engine.scaling import check_request
from stageflow.errors import EngineError, PipelineError, RecordsFailedError
from stageflow.observe.latency import LatencyRecorder
from stageflow.observe.snapshot import Progress
from stageflow.observe.watch import EVERY, Listener, Watch
from stageflow.security import Keys, require_keys

if TYPE_CHECKING:
    from distributed import Client

    from stageflow.engine.cluster import Placement
    from stageflow.observe.metrics import Metrics

__all__ = ["Run"]

log = logging.getLogger("stageflow.engine")


class Run:
    """One run of a pipeline over some items.

    Iterating it starts the worker processes, feeds the items and yields the last stage's
    Output models as their input records complete (not necessarily in input order when a
    stage has several workers). Every worker is gone when the iteration ends, raises, or is
    abandoned (``close()``, or ``break`` and dropping the iterator: at once, with no help
    from the cyclic garbage collector; see :class:`_Core`).

    When the run dead-lettered more records than ``max_errors`` allows, the iteration ends
    by raising :class:`~stageflow.errors.RecordsFailedError`, whose ``report`` tells what
    failed; :attr:`report` holds the same :class:`RunReport` at any time.

    Options:

    ``dead_letter``
        Path of a JSON Lines file receiving every dead-lettered record with its reason, or
        an open text file. Without it the entries are kept on the report (up to 1,000).
    ``max_errors``
        Dead-lettered records tolerated before the run counts as failed (default 0).
    ``numbered``
        The items are already ``(line number, JSON bytes)`` pairs, as the CLI reads them.
    ``read_ahead``
        Iterate ``items`` in a background thread, for an iterator that blocks (a socket, a
        slow generator): results keep flowing while it waits. Leave it off for iterators
        bound to the calling thread (sqlite3 cursors, for example).
    ``fuse``
        False runs every stage in worker processes of its own (see :mod:`stageflow.plan`).
    ``metrics``
        Serve Prometheus metrics while the run lasts: an address such as ``"127.0.0.1:0"``
        (a port alone means loopback; the URL is :attr:`metrics_url` once iteration
        started), or a :class:`~stageflow.observe.metrics.Metrics` that the caller owns.
    ``latency``
        Measure each record's time from input to result for the report (on with metrics).
    ``batch_size``, ``max_in_flight``, ``max_deaths``, ``start_timeout``, ``stop_timeout``,
    ``heartbeat_timeout``, ``stuck_after``, ``credit``, ``launcher``, ``fuse``,
    ``upstream_nice``
        See :class:`~stageflow.engine.options.EngineOptions`.
    ``listen``, ``keys``
        Also accept workers joining from other hosts (``stageflow worker --join``) on
        ``listen``, ``tcp://HOST:PORT`` (port 0: a free one, logged as "listening for
        workers on ..."), with the CURVE keys in the folder ``keys`` (``stageflow keygen``)
        or a :class:`~stageflow.security.Keys`; only loopback may go without keys.
    ``cluster``, ``cluster_workers``
        Place joined workers on a Dask cluster (``pip install 'stageflow[dask]'``): a
        :class:`distributed.Client`, or its scheduler's address (``tcp://HOST:8786``), with
        ``cluster_workers`` long-running tasks (default: one per Dask worker thread), spread
        over the stages with ``workers: 0`` (see :mod:`stageflow.engine.cluster`). The run
        then listens by itself, with keys made for it, unless ``listen`` says where.

    While it runs, :meth:`scale` (or ``add_worker``, ``remove_worker``, ``scale_to``) changes
    how many workers a stage has, from any thread, and :meth:`workers` lists them.
    """

    def __init__(self, pipeline: Any, items: Iterable[Any], **options: Any) -> None:
        self._core = _Core(pipeline, items, **options)
        self._iterator: Iterator[Any] | None = None

    def __iter__(self) -> Iterator[Any]:
        if self._iterator is None:
            self._iterator = self._core.models()
        return self._iterator

    def __enter__(self) -> Run:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    @property
    def pipeline(self) -> Any:
        return self._core.pipeline

    @property
    def report(self) -> RunReport:
        return self._core.report

    @property
    def watch(self) -> Watch:
        return self._core.watch

    @property
    def options(self) -> EngineOptions:
        return self._core.options

    @property
    def metrics_url(self) -> str | None:
        """Where the metrics are served, once iteration started with ``metrics``."""
        return self._core.metrics_url

    def progress(self) -> Progress | None:
        """A snapshot of what the run has done so far; None before iteration started.

        From the thread that iterates it is taken now; from any other thread it is the
        latest one taken (at most a quarter of a second old while the run is going).
        """
        return self._core.progress()

    def on_progress(self, listener: Listener, every: float = EVERY) -> None:
        """Call ``listener(progress)`` about every ``every`` seconds and once at the end.

        It runs in the iterating thread, between two turns of the engine's loop, so keep
        it short; an exception it raises ends the run like one from the iteration.
        """
        self._core.on_progress(listener, every)

    def lines(self, on_idle: Callable[[], None] | None = None) -> Iterator[bytes]:
        """Iterate over the results as JSON lines (bytes, no newline), without parsing them.

        ``on_idle`` is called whenever the run is about to wait after handing out results:
        the moment to flush a buffered output.
        """
        return self._core.lines(on_idle)

    def completions(
        self,
        on_idle: Callable[[], None] | None = None,
        on_started: Callable[[], None] | None = None,
    ) -> Generator[tuple[int, list[bytes]], None, None]:
        """Iterate once per completed input record: ``(seq, its result lines)``.

        ``seq`` is the record's number (its line number with ``numbered``), and not
        positive for what a stage's ``finish()`` emitted. Every dead letter of the record is
        in the dead-letter output before it is yielded, so a caller can record durably which
        records a given length of its output and dead letters covers (``stageflow run``'s
        resume journal does). ``on_started`` is called once the run has started (a worker of
        every stage is ready, every worker of a keyed stage), before the first record is
        read: the moment to open (and truncate) the outputs.
        """
        return self._core.completions(on_idle, on_started)

    def batches(
        self,
        on_idle: Callable[[], None] | None = None,
        on_started: Callable[[], None] | None = None,
    ) -> Generator[list[tuple[int, list[bytes]]], None, None]:
        """Like :meth:`completions`, but a list of ``(seq, result lines)`` at a time: those
        completed since the last list. Cheaper for a caller that only writes them out.

        ``on_started`` is called once the run has started and its first input records are
        on their way (nothing is handed out before it returns), so opening the outputs
        there costs the first results nothing.
        """
        return self._core.batches(on_idle, on_started)

    def stop(self) -> None:
        """Stop reading input; records already in flight are finished and yielded."""
        self._core.stop()

    def abort(self) -> None:
        """Make the iteration's end stop the workers at once (SIGKILL), not politely."""
        self._core.abort()

    def scale(self, stage: str, count: int) -> None:
        """Give ``stage`` ``count`` workers while the run goes on; safe from any thread.

        Added workers get work as soon as they are ready; removed ones finish the frames they
        hold, run ``finish()`` and exit. Nothing is lost or done twice. Before iteration
        starts, it sets how many workers the run starts with. A stage fused with others
        scales its whole group. A stage with ``workers: {min, max}`` takes a count within
        those bounds (another is a ValueError), and its autoscaler goes on from there.
        """
        self._core.request_scale(stage, count, relative=False)

    def scale_to(self, stage: str, count: int) -> None:
        """The same as :meth:`scale` (the name the seed's ScalableWorkerPool used)."""
        self.scale(stage, count)

    def add_worker(self, stage: str) -> None:
        """One more worker for ``stage`` (an autoscaled one: not beyond its ``max``)."""
        self._core.request_scale(stage, 1, relative=True)

    def remove_worker(self, stage: str) -> None:
        """One worker fewer for ``stage`` (never fewer than one, or an autoscaled one's min)."""
        self._core.request_scale(stage, -1, relative=True)

    @property
    def listening(self) -> str | None:
        """Where workers of other hosts join (``listen``, its real port), once started."""
        co = self._core._coordinator
        return co.listener.address if co is not None and co.listener is not None else None

    def workers(self) -> list[WorkerStatus]:
        """The live workers: stage, pid or host, frames held and records processed."""
        coordinator = self._core._coordinator
        return coordinator.workers() if coordinator is not None else []

    def close(self) -> None:
        """Abandon the iteration and stop every worker."""
        if self._iterator is not None:
            self._iterator.close()  # type: ignore[attr-defined]
        elif self._core._coordinator is not None:
            self._core._coordinator.close()


class _Core:
    """A :class:`Run`'s state and engine: everything but the iterator it hands out.

    The iterator's frames refer to the core, never to the Run that holds the iterator, so
    there is no reference cycle: when an abandoned iteration (``break``, then the loop and
    the Run dropped) loses its last reference, it is closed at once and its ``finally``
    stops the workers, with no wait for the cyclic garbage collector.
    """

    def __init__(
        self,
        pipeline: Any,
        items: Iterable[Any],
        *,
        dead_letter: str | os.PathLike[str] | IO[str] | None = None,
        max_errors: int = 0,
        numbered: bool = False,
        read_ahead: bool = False,
        metrics: str | Metrics | None = None,
        latency: bool = False,
        cluster: Client | str | None = None,
        cluster_workers: int | None = None,
        **options: Any,
    ) -> None:
        pipeline.check_runnable()
        self.pipeline = pipeline
        self.report = RunReport(pipeline.name, max_errors=max_errors)
        self.watch = Watch()
        self._metrics_option = metrics
        self._metrics: Metrics | None = None
        self._latency = latency or metrics is not None
        self._thread: int | None = None
        keys = options.get("keys")
        if keys is not None and not isinstance(keys, Keys):
            options["keys"] = Keys.for_coordinator(keys)
        self._placement: Placement | None = None
        if cluster is not None:
            from stageflow.engine.cluster import Placement

            self._placement = placement = Placement(
                cluster,
                pipeline.plan(fuse=options.get("fuse", True)),
                count=cluster_workers,
                listen=options.get("listen"),
                keys=options.get("keys"),
            )
            options["listen"], options["keys"] = placement.listen, placement.keys
        self.options = EngineOptions(**options)
        if self.options.listen is not None:
            require_keys(self.options.listen, self.options.keys)
        else:
            for stage in pipeline.stages:
                if stage.workers == 0:
                    raise PipelineError(
                        f"stage {stage.name!r} has workers: 0, so only workers joining from "
                        "other hosts serve it; pass listen= (--listen ADDRESS) to accept them, "
                        "or cluster= (--cluster ADDRESS) to place them on a Dask cluster"
                    )
        # A fused stage runs in every process of its group.
        self.report.stage_workers = {
            stage.name: unit.workers
            for unit in pipeline.plan(fuse=self.options.fuse).units
            for stage in unit.stages
        }
        self._items = items
        self._use_read_ahead = read_ahead
        self._numbered = numbered
        self._dead_letter = dead_letter
        self._coordinator: Coordinator | None = None
        #: Scaling asked for before the coordinator existed: (stage, count, relative).
        self._early: list[tuple[str, int, bool]] = []

    def request_scale(self, stage: str, count: int, relative: bool) -> None:
        """See :meth:`Run.scale`."""
        if self._coordinator is not None:
            self._coordinator.request_scale(stage, count, relative)
            return
        names = [s.name for s in self.pipeline.stages]
        if stage not in names:
            raise ValueError(f"no stage named {stage!r}; the stages are {', '.join(names)}")
        check_request(self.pipeline.stages[names.index(stage)], count, relative)
        self._early.append((stage, count, relative))

    def progress(self) -> Progress | None:
        """See :meth:`Run.progress`."""
        coordinator, latest = self._coordinator, self.watch.latest
        ended = latest is not None and latest.ended
        if coordinator is not None and self._thread == threading.get_ident() and not ended:
            return coordinator.progress()
        return latest

    def on_progress(self, listener: Listener, every: float = EVERY) -> None:
        """See :meth:`Run.on_progress`."""
        self.watch.add(listener, every)

    @property
    def metrics_url(self) -> str | None:
        """See :attr:`Run.metrics_url`."""
        return self._metrics.url if self._metrics is not None else None

    def lines(self, on_idle: Callable[[], None] | None = None) -> Iterator[bytes]:
        """See :meth:`Run.lines`."""
        for batch in self.batches(on_idle):
            for _seq, results in batch:
                yield from results

    def completions(
        self,
        on_idle: Callable[[], None] | None = None,
        on_started: Callable[[], None] | None = None,
    ) -> Generator[tuple[int, list[bytes]], None, None]:
        """See :meth:`Run.completions`."""
        return self._drive(on_idle, on_started, batched=False)

    def batches(
        self,
        on_idle: Callable[[], None] | None = None,
        on_started: Callable[[], None] | None = None,
    ) -> Generator[list[tuple[int, list[bytes]]], None, None]:
        """See :meth:`Run.batches`."""
        return self._drive(on_idle, on_started, batched=True)

    def _drive(
        self,
        on_idle: Callable[[], None] | None,
        on_started: Callable[[], None] | None,
        batched: bool,
    ) -> Generator[Any, None, None]:
        """Start the run, hand out what the coordinator completes, and always clean up."""
        self.report.started_at = time.time()
        self._thread = threading.get_ident()
        self._start_metrics()
        coordinator = Coordinator(self.pipeline, self.report, self.options)
        sink: IO[str] | None = None
        owned = False
        self._coordinator = coordinator
        for stage, count, relative in self._early:
            coordinator.request_scale(stage, count, relative)
        # Also run at interpreter exit, should the iteration still be suspended then.
        stop_workers = weakref.finalize(self, coordinator.close)
        coordinator.watch = self.watch
        self.watch.source = coordinator.progress
        if self._latency:
            coordinator.latency = LatencyRecorder(self.report)
        ahead: ReadAhead | None = None
        try:
            if self._placement is not None and coordinator.listener is not None:
                self._placement.start(coordinator.listener.address, self.options)
            coordinator.start()
            if coordinator.stopping:
                # Stopped while the workers were starting: the run never began, so no file
                # is opened (nor emptied) and no input is read; this only marks it stopped.
                yield from coordinator.batches(iter(()))
                return
            # Only now: a run that fails to start leaves an existing dead-letter file alone.
            sink, owned = self._open_sink()
            coordinator.sink = sink
            if on_started is not None and not batched:
                on_started()
            items: Iterable[Any] = self._items
            if self._use_read_ahead:
                ahead = ReadAhead(items)
                items = ahead
            source = iter(items) if self._numbered else _numbered(items)
            wakeup = ahead.wakeup_fd if ahead is not None else None
            if batched:
                # The first input goes out before the caller opens its outputs (which may
                # mean an fsync or two): the workers start on it meanwhile.
                coordinator.prime(source)
                if on_started is not None:
                    on_started()
                yield from coordinator.batches(source, wakeup, on_idle)
            else:
                yield from coordinator.completions(source, wakeup, on_idle)
        except EngineError as exc:
            self.report.error = str(exc)
            raise
        finally:
            stop_workers()
            if self._placement is not None:
                self._placement.close(0.0 if coordinator.aborting else self.options.stop_timeout)
            if ahead is not None:
                ahead.close()
            if owned and sink is not None:
                sink.close()
            self.report.ended_at = time.time()
            self.watch.final(coordinator.progress())
            self._stop_metrics()
        if self.report.dead_lettered > self.report.max_errors:
            count = self.report.dead_lettered
            where = (
                "see the dead-letter output for each reason"
                if self._dead_letter is not None
                else "each reason was logged as a warning; --dead-letter PATH (dead_letter= in "
                "Python) keeps them in a file"
            )
            raise RecordsFailedError(
                f"{count} {'record was' if count == 1 else 'records were'} dead-lettered "
                f"(allowed: {self.report.max_errors}); {where}",
                self.report,
            )

    def stop(self) -> None:
        """See :meth:`Run.stop`."""
        if self._coordinator is not None:
            self._coordinator.stopping = True

    def abort(self) -> None:
        """See :meth:`Run.abort`."""
        if self._coordinator is not None:
            self._coordinator.aborting = True

    def _start_metrics(self) -> None:
        option = self._metrics_option
        if option is None or self._metrics is not None:
            return
        from stageflow.observe.metrics import Metrics

        self._metrics = Metrics(option) if isinstance(option, str) else option
        self._metrics.watch(self.watch)

    def _stop_metrics(self) -> None:
        # Only a server this run started is stopped; a Metrics the caller passed is theirs.
        if isinstance(self._metrics_option, str) and self._metrics is not None:
            self._metrics.close()

    def models(self) -> Iterator[Any]:
        parse = self.pipeline.stages[-1].cls.Output.model_validate_json
        for line in self.lines():
            yield parse(line)

    def _open_sink(self) -> tuple[IO[str] | None, bool]:
        target = self._dead_letter
        if target is None:
            return None, False
        if isinstance(target, (str, os.PathLike)):
            return Path(target).open("w", encoding="utf-8"), True
        return target, False


def _numbered(items: Iterable[Any]) -> Iterator[Any]:
    """Turn items into (sequence number, JSON bytes) pairs, passing WAIT through."""
    seq = 0
    for item in items:
        if item is WAIT:
            yield item
            continue
        seq += 1
        yield seq, _to_json(item)


def _to_json(item: Any) -> bytes:
    # A raw newline is JSON whitespace (or an error inside a string), and the wire format
    # uses it to separate records.
    if isinstance(item, bytes):
        return item.replace(b"\n", b" ")
    if isinstance(item, str):
        # surrogatepass: a lone surrogate becomes bytes that are dead-lettered, not a crash.
        return item.replace("\n", " ").encode("utf-8", "surrogatepass")
    if isinstance(item, BaseModel):
        return item.__pydantic_serializer__.to_json(item)
    from pydantic_core import to_json

    return to_json(item)


class ReadAhead:
    """Iterate ``items`` in a daemon thread; yield WAIT whenever nothing is ready yet.

    A byte written to :attr:`wakeup_fd` for each item lets the coordinator sleep in its
    poll and still take a record the moment it arrives.
    """

    def __init__(self, items: Iterable[Any], depth: int = 4096) -> None:
        self._items = items
        self._ready: queue.Queue[tuple[bool, Any]] = queue.Queue(maxsize=depth)
        self._done = threading.Event()
        self.wakeup_fd, self._wakeup_write = os.pipe()
        os.set_blocking(self.wakeup_fd, False)
        os.set_blocking(self._wakeup_write, False)
        threading.Thread(target=self._pump, name="stageflow-read-ahead", daemon=True).start()

    def _hand_over(self, entry: tuple[bool, Any]) -> bool:
        while not self._done.is_set():
            try:
                self._ready.put(entry, timeout=0.1)
            except queue.Full:
                continue
            with contextlib.suppress(OSError):  # full (a wake-up is pending) or closed
                os.write(self._wakeup_write, b"x")
            return True
        return False  # the consumer went away: stop reading

    def _pump(self) -> None:
        try:
            for item in self._items:
                if not self._hand_over((True, item)):
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the consuming thread, raised there
            self._hand_over((False, exc))
        else:
            self._hand_over((False, None))
        finally:
            # Closed by the writer, so no write can ever land on a reused descriptor.
            os.close(self._wakeup_write)

    def __iter__(self) -> Iterator[Any]:
        try:
            while True:
                try:
                    more, item = self._ready.get_nowait()
                except queue.Empty:
                    yield WAIT
                    continue
                if more:
                    yield item
                elif item is None:
                    return
                else:
                    raise item
        finally:
            self._done.set()  # the consumer is gone: the pump stops at its next hand-over

    def close(self) -> None:
        """Stop the pump and close the wake-up pipe; call once the poller is done with it."""
        self._done.set()
        if self.wakeup_fd >= 0:
            os.close(self.wakeup_fd)  # a later write by the pump fails with EPIPE, suppressed
            self.wakeup_fd = -1
