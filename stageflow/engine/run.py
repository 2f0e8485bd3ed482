"""The object :meth:`stageflow.Pipeline.run` returns: an iterator of results with a report."""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from pydantic import BaseModel

from stageflow.engine.coordinator import WAIT, Coordinator, EngineOptions
from stageflow.engine.report import RunReport
from stageflow.errors import RecordsFailedError

__all__ = ["Run"]

log = logging.getLogger("stageflow.engine")


class Run:
    """One run of a pipeline over some items.

    Iterating it starts the worker processes, feeds the items and yields the last stage's
    Output models as their input records complete (not necessarily in input order when a
    stage has several workers). Every worker is gone when the iteration ends, raises, or is
    abandoned (``close()``, ``break`` or garbage collection of the iterator).

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
    ``batch_size``, ``max_in_flight``, ``max_deaths``, ``start_timeout``, ``stop_timeout``
        See :class:`~stageflow.engine.coordinator.EngineOptions`.
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
        **options: Any,
    ) -> None:
        pipeline.check_runnable()
        self.pipeline = pipeline
        self.report = RunReport(pipeline.name, max_errors=max_errors)
        self.options = EngineOptions(**options)
        self._items = _read_ahead(items) if read_ahead else items
        self._numbered = numbered
        self._dead_letter = dead_letter
        self._coordinator: Coordinator | None = None
        self._iterator: Iterator[Any] | None = None

    def __iter__(self) -> Iterator[Any]:
        if self._iterator is None:
            self._iterator = self._models()
        return self._iterator

    def __enter__(self) -> Run:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def lines(self) -> Iterator[bytes]:
        """Iterate over the results as JSON lines (bytes, no newline), without parsing them."""
        sink, owned = self._open_sink()
        coordinator = Coordinator(self.pipeline, self.report, self.options, sink)
        self._coordinator = coordinator
        try:
            coordinator.start()
            source = iter(self._items) if self._numbered else _numbered(self._items)
            yield from coordinator.run(source)
        finally:
            coordinator.close()
            if owned and sink is not None:
                sink.close()
        if self.report.dead_lettered > self.report.max_errors:
            raise RecordsFailedError(
                f"{self.report.dead_lettered} records were dead-lettered "
                f"(allowed: {self.report.max_errors}); see the dead-letter output for each reason",
                self.report,
            )

    def stop(self) -> None:
        """Stop reading input; records already in flight are finished and yielded."""
        if self._coordinator is not None:
            self._coordinator.stopping = True

    def abort(self) -> None:
        """Make the iteration's end stop the workers at once (SIGKILL), not politely."""
        if self._coordinator is not None:
            self._coordinator.aborting = True

    def close(self) -> None:
        """Abandon the iteration and stop every worker."""
        if self._iterator is not None:
            self._iterator.close()  # type: ignore[attr-defined]
        elif self._coordinator is not None:
            self._coordinator.close()

    def _models(self) -> Iterator[Any]:
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
        return item.replace("\n", " ").encode()
    if isinstance(item, BaseModel):
        return item.__pydantic_serializer__.to_json(item)
    from pydantic_core import to_json

    return to_json(item)


def _read_ahead(items: Iterable[Any], depth: int = 4096) -> Iterator[Any]:
    """Iterate ``items`` in a daemon thread; yield WAIT whenever nothing is ready yet."""
    ready: queue.Queue[tuple[bool, Any]] = queue.Queue(maxsize=depth)
    done = threading.Event()

    def hand_over(entry: tuple[bool, Any]) -> bool:
        while not done.is_set():
            try:
                ready.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False  # the consumer went away: stop reading

    def pump() -> None:
        try:
            for item in items:
                if not hand_over((True, item)):
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the consuming thread, raised there
            hand_over((False, exc))
        else:
            hand_over((False, None))

    threading.Thread(target=pump, name="stageflow-read-ahead", daemon=True).start()
    try:
        while True:
            try:
                more, item = ready.get_nowait()
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
        done.set()
