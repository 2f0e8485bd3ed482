"""One stage's work on a batch of records, free of sockets and reactors.

The worker process feeds each incoming frame to :meth:`StageRunner.run_batch`, which
validates the records against the stage's Input, calls ``process()``, serialises the
Outputs and appends everything it produced (records, acknowledgements, dead letters) to a
:class:`Pending` that the worker flushes downstream.
"""

from __future__ import annotations

import copy
import json
import logging
import mmap
import os
import random
import signal
import struct
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, TypeAdapter, ValidationError

from stageflow.stage import Stage, iter_outputs

__all__ = ["CurrentRecord", "Pending", "RecordTimeout", "StageRunner", "dead_letter"]

log = logging.getLogger(__name__)

_CURRENT = struct.Struct("<qqq")
_IDLE = (0, -1)


class RecordTimeout(BaseException):
    """Raised inside process() when one record takes longer than the stage's timeout.

    A BaseException, so that a stage's own ``except Exception`` cannot swallow it.
    """


class CurrentRecord:
    """A tiny shared file saying which record the worker is inside process() for.

    The coordinator reads it after the worker dies, to know which record was being
    processed (and so may be poison) without a message per record. Inside a fused group it
    also says which ``member`` (the stage's position in the group) was running.
    """

    member = 0

    def __init__(self, path: str) -> None:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            os.ftruncate(fd, _CURRENT.size)
            self._map = mmap.mmap(fd, _CURRENT.size)
        finally:
            os.close(fd)
        self.set(*_IDLE)

    def set(self, root: int, attempt: int) -> None:
        _CURRENT.pack_into(self._map, 0, root, attempt, self.member)

    def clear(self) -> None:
        _CURRENT.pack_into(self._map, 0, *_IDLE, 0)

    def for_member(self, member: int) -> CurrentRecord:
        """The same file, written by the stage at position ``member`` of a fused group."""
        view = copy.copy(self)
        view.member = member
        return view

    @staticmethod
    def read(path: str) -> tuple[int, int, int] | None:
        """The (root, attempt, member) a worker was processing, or None when it was idle."""
        try:
            with open(path, "rb") as handle:
                data = handle.read(_CURRENT.size)
        except OSError:
            return None
        if len(data) != _CURRENT.size:
            return None
        root, attempt, member = _CURRENT.unpack(data)
        return None if attempt < 0 else (root, attempt, member)


@dataclass
class Pending:
    """What a worker has produced and not yet sent."""

    ids: list[int] = field(default_factory=list)
    records: list[bytes] = field(default_factory=list)
    acks: list[int] = field(default_factory=list)
    dead: list[list[Any]] = field(default_factory=list)  # [root, attempt, entry]
    processed: dict[str, int] = field(default_factory=dict)  # records each stage took in
    size: int = 0  # bytes of records and dead-lettered records, to keep frames bounded

    def take(self) -> Pending:
        taken = Pending(self.ids, self.records, self.acks, self.dead, self.processed, self.size)
        self.ids, self.records, self.acks, self.dead = [], [], [], []
        self.processed = {}
        self.size = 0
        return taken


#: Where a stage's Outputs go once process() returned them:
#: ``(root, attempt, outputs, record they came from, pending) -> XOR of the tags sent``.
Forward = Callable[[int, int, list[Any], "bytes | BaseModel | None", Pending], int]


def dead_letter(
    root: int | None,
    stage: str,
    error: str,
    message: str,
    record: bytes | None,
    errors: list[Any] | None = None,
    detail: str | None = None,
) -> dict[str, Any]:
    """Build one dead-letter entry, with the record as JSON when it parses, else as text."""
    entry: dict[str, Any] = {
        "line": root if root is not None and root > 0 else None,
        "stage": stage,
        "error": error,
        "message": message,
        "errors": errors,
        "record": None,
    }
    if record is not None:
        try:
            entry["record"] = json.loads(record)
        except ValueError:
            entry["record"] = record.decode("utf-8", "replace")
    if detail:
        entry["traceback"] = detail
    return entry


class _OutputError(Exception):
    """process() or finish() produced something that is not the stage's Output."""


def _on_alarm(signum: int, frame: Any) -> None:
    raise RecordTimeout


class StageRunner:
    """Runs one stage instance over batches of wire records."""

    def __init__(
        self,
        cls: type[Stage],
        stage_name: str,
        config: BaseModel | None = None,
        *,
        retries: int = 2,
        timeout: float | None = None,
        trusted_input: bool = False,
        current: CurrentRecord | None = None,
        max_record_size: int | None = None,
    ) -> None:
        self.stage = cls(config)
        self.stage_name = stage_name
        self.retries = retries
        self.timeout = timeout
        self.current = current
        self.max_record_size = max_record_size
        self._input = cls.Input
        self._output = cls.Output
        self._serialize = cls.Output.__pydantic_serializer__.to_json
        self._stage_process = self.stage.process
        # Frames from another stageflow process hold one JSON document per line, so the
        # whole batch can be validated in one call; raw input lines are checked one by one.
        self._batch: TypeAdapter[list[Any]] | None = (
            TypeAdapter(list[cls.Input]) if trusted_input else None  # type: ignore[name-defined]
        )
        self._tags = random.Random(os.urandom(16)).getrandbits
        #: Serialised into the outgoing frame, or, inside a fused group, handed to the next
        #: stage in memory (:mod:`stageflow.engine.group` rebinds it).
        self.forward: Forward = self.emit
        if timeout is not None:
            signal.signal(signal.SIGALRM, _on_alarm)

    def setup(self) -> None:
        self.stage.setup()

    def run_batch(self, ids: Sequence[int], records: Sequence[bytes], pending: Pending) -> None:
        """Process one frame's records, appending what they produce to ``pending``."""
        items = self._validate_batch(records)
        forward = self.forward
        for index, record in enumerate(records):
            base = index * 3
            root, attempt, tag = ids[base], ids[base + 1], ids[base + 2]
            if items is not None:
                item: Any = items[index]
            else:
                try:
                    item = self._input.model_validate_json(record)
                except ValidationError as exc:
                    self.reject(root, attempt, record, exc, pending)
                    pending.acks += (root, attempt, tag)
                    continue
            outputs = self.process_item(root, attempt, item, record, pending)
            xor = 0 if outputs is None else forward(root, attempt, outputs, record, pending)
            pending.acks += (root, attempt, tag ^ xor)
        name = self.stage_name
        pending.processed[name] = pending.processed.get(name, 0) + len(records)

    def finish(self) -> tuple[list[bytes], list[dict[str, Any]]]:
        """Call the stage's finish() and return its serialised Outputs and any dead letter."""
        pending = Pending()
        self.finish_into(pending)
        return pending.records, [entry for _, _, entry in pending.dead]

    def finish_into(self, pending: Pending) -> None:
        """Call the stage's finish() and forward its Outputs, which belong to no input line."""
        try:
            outputs = [self._model(out) for out in iter_outputs(self.stage.finish())]
        except Exception as exc:  # noqa: BLE001 - a failing finish() is data, like process()
            log.error("stage %r: finish() failed: %s: %s", self.stage_name, type(exc).__name__, exc)
            entry = dead_letter(
                None,
                self.stage_name,
                type(exc).__name__,
                f"finish() failed: {exc}",
                None,
                detail=traceback.format_exc(),
            )
            pending.dead.append([0, 0, entry])
            return
        self.forward(0, 0, outputs, None, pending)

    def _validate_batch(self, records: Sequence[bytes]) -> list[Any] | None:
        if self._batch is None or len(records) < 2:
            return None
        try:
            items = self._batch.validate_json(b"[" + b",".join(records) + b"]")
        except ValidationError:
            return None  # fall back to one record at a time, to name the bad one
        return items if len(items) == len(records) else None

    def process_item(
        self, root: int, attempt: int, item: Any, record: bytes | BaseModel, pending: Pending
    ) -> list[Any] | None:
        """Run process() on a valid Input with retries: its Outputs, or None if dead-lettered.

        ``record`` is what the item was validated from, for the dead letter: the wire bytes,
        or the item itself inside a fused group.
        """
        failure: BaseException | None = None
        detail = ""
        outputs: list[Any] = []
        for _ in range(self.retries + 1):
            if self.current is not None:
                self.current.set(root, attempt)
            try:
                outputs = self._call(item)
                failure = None
                break
            except RecordTimeout:
                failure = RecordTimeout(f"process() took longer than {self.timeout}s")
                detail = ""
                break  # a hang is not retried: it would only hang again
            except _OutputError as exc:
                failure, detail = exc, ""
                break
            except Exception as exc:  # noqa: BLE001 - user code's errors are data: retry, dead-letter
                failure, detail = exc, traceback.format_exc()
            finally:
                if self.current is not None:
                    self.current.clear()
        if failure is None:
            return outputs
        attempts = (
            ""
            if isinstance(failure, (RecordTimeout, _OutputError))
            else (f" (after {self.retries + 1} attempts)")
        )
        self._dead(root, attempt, failure, f"{failure}{attempts}", detail, record, pending)
        return None

    def emit(
        self,
        root: int,
        attempt: int,
        outputs: list[Any],
        record: bytes | BaseModel | None,
        pending: Pending,
    ) -> int:
        """Serialise Outputs into the outgoing frame; return the XOR of their new tags."""
        try:
            data = [self._serialize(output) for output in outputs]
            self._check_sizes(data)
        except _OutputError as exc:
            self._dead(root, attempt, exc, str(exc), "", record, pending)
            return 0
        except Exception as exc:  # noqa: BLE001 - an Output that cannot be serialised is data
            self._dead(root, attempt, exc, str(exc), traceback.format_exc(), record, pending)
            return 0
        xor = 0
        tags = self._tags
        for output in data:
            child = tags(63)
            xor ^= child
            pending.ids += (root, attempt, child)
            pending.records.append(output)
            pending.size += len(output)
        return xor

    def reject(
        self, root: int, attempt: int, record: bytes, exc: ValidationError, pending: Pending
    ) -> None:
        """Dead-letter a record that does not validate against the stage's Input."""
        pending.dead.append([root, attempt, self._invalid(root, record, exc)])
        pending.size += len(record)

    def _dead(
        self,
        root: int,
        attempt: int,
        failure: BaseException,
        message: str,
        detail: str,
        record: bytes | BaseModel | None,
        pending: Pending,
    ) -> None:
        if isinstance(record, BaseModel):
            record = type(record).__pydantic_serializer__.to_json(record)
        entry = dead_letter(
            root, self.stage_name, type(failure).__name__, message, record, detail=detail or None
        )
        pending.dead.append([root, attempt, entry])
        pending.size += len(record or b"")

    def _check_sizes(self, outputs: list[bytes]) -> None:
        limit = self.max_record_size
        if limit is None:
            return
        for output in outputs:
            if len(output) > limit:
                raise _OutputError(
                    f"process() returned an output of {len(output)} bytes, more than the "
                    f"{limit}-byte limit of one frame; raise max_message_size or emit smaller "
                    "records"
                )

    def _call(self, item: Any) -> list[Any]:
        if self.timeout is None:
            return self._outputs(self._stage_process(item))
        signal.setitimer(signal.ITIMER_REAL, self.timeout)
        try:
            # A generator runs inside _outputs, so it must stay under the alarm too.
            return self._outputs(self._stage_process(item))
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)

    def _outputs(self, result: Any) -> list[Any]:
        if type(result) is self._output:
            return [result]  # the common one-in, one-out case, kept short
        return [self._model(out) for out in iter_outputs(result)]

    def _model(self, output: Any) -> BaseModel:
        if isinstance(output, self._output):
            return output  # built by this stage: no second validation
        if isinstance(output, dict):
            try:
                return self._output.model_validate(output)
            except ValidationError as exc:
                raise _OutputError(
                    f"process() returned a dict that is not a valid {self._output.__name__}: "
                    f"{exc.errors(include_url=False)[0]['msg']}"
                ) from None
        raise _OutputError(
            f"process() returned {type(output).__name__}, expected {self._output.__name__}"
        )

    def _invalid(self, root: int, record: bytes, exc: ValidationError) -> dict[str, Any]:
        errors = json.loads(exc.json(include_url=False))
        first = errors[0] if errors else {}
        where = ".".join(str(p) for p in first.get("loc", ())) or "(record)"
        return dead_letter(
            root,
            self.stage_name,
            "ValidationError",
            f"record does not match {self._input.__name__}: {where}: {first.get('msg', exc)}",
            record,
            errors=errors,
        )
