"""One stage's work on a batch of records, free of sockets and reactors.

The worker process feeds each incoming frame to :meth:`StageRunner.run_batch`, which
validates the records against the stage's Input, calls ``process()``, serialises the
Outputs and appends everything it produced (records, acknowledgements, dead letters) to a
:class:`Pending` that the worker flushes downstream.
"""

from __future__ import annotations

import base64
import copy
import json
import logging
import mmap
import os
import random
import signal
import struct
import traceback
from array import array
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import chain, compress, groupby, islice, repeat
from operator import ne
from time import perf_counter
from typing import Any

from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic_core import InitErrorDetails, from_json

from stageflow.engine.strict import (
    holds_null,
    may_hold_floats,
    non_finite_field,
    nonstandard_json,
)
from stageflow.engine.timing import count_buckets
from stageflow.errors import InvalidOutput
from stageflow.stage import Stage, iter_outputs

__all__ = [
    "CurrentRecord",
    "Handoff",
    "Pending",
    "Produced",
    "RecordTimeout",
    "StageRunner",
    "dead_letter",
    "flow",
    "run_chain",
]

log = logging.getLogger(__name__)

#: The roots whose ids the current-record file holds at once: the ids of the slice being run
#: (run_chain cuts a longer one), so that naming a record costs one store per process() call.
#: How to let larger records through, for the sentence that refuses one.
RAISE_LIMIT = "--max-message-size (stageflow run) or max_message_size= (Pipeline.run)"
TABLE_ROOTS = 256
_EXPLICIT = TABLE_ROOTS  # the entry set() fills, for a record named outside a slice
_SLOTS = TABLE_ROOTS + 1
#: ``where`` (-1 when idle, else member * _SLOTS + entry) and perf_counter() when the call
#: began; then _SLOTS entries of a root's three ids (seq, attempt, tag).
_HEAD = struct.Struct("<qd")
_ENTRY = struct.Struct("<qqq")
_SIZE = _HEAD.size + _SLOTS * _ENTRY.size
#: The ids of finish()'s outputs: the one item of the null root 0.
FINISH_IDS = (0, 0, 0)
#: The roots run_chain takes through the stages at a time. Every stage runs over the whole
#: slice before the next (its loop stays hot), so everything the slice becomes at every stage
#: is alive at once: for 256 small text records (about 60 objects each) over a megabyte,
#: more than a core's cache: in-process, the fused text peer took 10-18% more time than in
#: slices of 32, which fit (benchmarks/README.md, seventh session). Below 16 the cost per
#: slice shows.
SLICE_ROOTS = 32


class RecordTimeout(BaseException):
    """Raised inside process() when one record takes longer than the stage's timeout.

    A BaseException, so that a stage's own ``except Exception`` cannot swallow it.
    """


class CurrentRecord:
    """A tiny shared file saying which record the worker is inside process() for.

    The coordinator reads it after the worker dies, to know which record was being
    processed (and so may be poison) without a message per record. Inside a fused group it
    also says which ``member`` (the stage's position in the group) was running. The worker's
    link thread reads it too, for its beats: which record, and since when.

    It holds the ids of the slice being run (:meth:`hold`, once per slice), and a word that
    points into them (:attr:`where`, a one-item view stored once per process() call): an
    8-byte store, atomic, where packing a record's ids per call cost more than many a
    process() does. With no ``path`` the file is private memory, for a runner whose worker
    keeps none: the runner's loop is the same either way.
    """

    member = 0

    def __init__(self, path: str | None) -> None:
        if path is None:
            self._map = mmap.mmap(-1, _SIZE)
        else:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                os.ftruncate(fd, _SIZE)
                self._map = mmap.mmap(fd, _SIZE)
            finally:
                os.close(fd)
        view = memoryview(self._map)
        #: ``where[0] = member * SLOTS + entry`` names a held record; -1 says idle.
        self.where = view[:8].cast("q")
        #: ``started[0]``: perf_counter() when the named record's call began.
        self.started = view[8:16].cast("d")
        self._ids = view[_HEAD.size :].cast("q")
        self.where[0] = -1

    @property
    def base(self) -> int:
        """What this member adds to a held record's entry to name it in :attr:`where`."""
        return self.member * _SLOTS

    def hold(self, ids: Sequence[int]) -> None:
        """Keep the ids of a slice of at most TABLE_ROOTS roots (flat, three per root), for
        :attr:`where` to point into; called while idle, so no reader sees them half made."""
        self._ids[: len(ids)] = array("q", ids)

    def set(self, root: int, attempt: int, started: float = 0.0) -> None:
        """Name a record that is not in the held slice."""
        at = _EXPLICIT * 3
        self.where[0] = -1
        self._ids[at : at + 3] = array("q", (root, attempt, 0))
        self.started[0] = started
        self.where[0] = self.base + _EXPLICIT

    def clear(self) -> None:
        self.where[0] = -1

    def inside(self) -> tuple[int, int, float] | None:
        """The (root, attempt, start time) inside process() now, or None when idle."""
        where, started = _HEAD.unpack_from(self._map)
        if where < 0:
            return None
        root, attempt, _ = _ENTRY.unpack_from(self._map, _HEAD.size + where % _SLOTS * _ENTRY.size)
        return root, attempt, started

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
                data = handle.read(_SIZE)
        except OSError:
            return None
        if len(data) != _SIZE:
            return None
        where, _ = _HEAD.unpack_from(data)
        if where < 0:
            return None
        member, entry = divmod(where, _SLOTS)
        root, attempt, _ = _ENTRY.unpack_from(data, _HEAD.size + entry * _ENTRY.size)
        return root, attempt, member


@dataclass
class Pending:
    """What a worker has produced and not yet sent; the counts are by stage name, as a fused
    group's worker reports each of its stages."""

    ids: list[int] = field(default_factory=list)
    records: list[bytes] = field(default_factory=list)
    acks: list[int] = field(default_factory=list)
    dead: list[list[Any]] = field(default_factory=list)  # [root, attempt, entry]
    processed: dict[str, int] = field(default_factory=dict)  # records each stage took in
    size: int = 0  # bytes of records and dead-lettered records, to keep frames bounded
    busy: dict[str, float] = field(default_factory=dict)  # seconds inside process(), retries in
    times: dict[str, dict[int, int]] = field(default_factory=dict)  # calls per time bucket

    def take(self) -> Pending:
        taken = Pending(
            self.ids,
            self.records,
            self.acks,
            self.dead,
            self.processed,
            self.size,
            self.busy,
            self.times,
        )
        self.ids, self.records, self.acks, self.dead = [], [], [], []
        self.processed, self.busy, self.times = {}, {}, {}
        self.size = 0
        return taken


#: What :meth:`StageRunner.step` returns: ``(made, outputs)``, the Outputs of the items that
#: were not dead-lettered, flat and in order, and ``made[j]``, the position in the items of
#: the one output j came from. Flat, so that the common one-in, one-out call costs two
#: appends, and a hop can carry a whole slice on at C speed.
Produced = tuple[list[int], list[Any]]
#: Carries one fused member's Outputs to the next member of its group
#: (:mod:`stageflow.engine.group`): ``(owners, produced, sources, ids, pending) -> (owners,
#: items)``, the next stage's valid Inputs and the frame positions of their roots.
Handoff = Callable[
    [list[int], Produced, Sequence[Any], Sequence[int], "Pending"], tuple[list[int], list[Any]]
]


def run_chain(
    members: Sequence[StageRunner],
    handoffs: Sequence[Handoff],
    ids: Sequence[int],
    records: Sequence[bytes],
    pending: Pending,
) -> None:
    """Run one frame's records through ``members``, one stage at a time.

    Each stage runs over all the records the one before it produced (not one record
    through every stage): its loop stays hot and the bookkeeping is paid per stage rather
    than per call. The order of the outputs is the same either way. ``handoffs[k]`` carries
    member k's Outputs to member k + 1. The time spent in process() is left for
    :meth:`StageRunner.account`, which the caller makes as often as it reports.
    """
    if len(records) > SLICE_ROOTS:  # the current-record file holds at most TABLE_ROOTS
        for start in range(0, len(records), SLICE_ROOTS):
            end = start + SLICE_ROOTS
            run_chain(members, handoffs, ids[start * 3 : end * 3], records[start:end], pending)
        return
    first = members[0]
    first.current.hold(ids)
    processed = pending.processed
    processed[first.stage_name] = processed.get(first.stage_name, 0) + len(records)
    owners, items, sources = first.admit(ids, records, pending)
    produced = first.step(owners, items, sources, ids, pending)
    flow(members, handoffs, 0, owners, produced, sources, ids, pending)


def flow(
    members: Sequence[StageRunner],
    handoffs: Sequence[Handoff],
    position: int,
    owners: list[int],
    produced: Produced,
    sources: Sequence[Any],
    ids: Sequence[int],
    pending: Pending,
) -> None:
    """Carry what member ``position`` produced through the members after it, then out."""
    for handoff, member in zip(handoffs[position:], members[position + 1 :], strict=True):
        owners, items = handoff(owners, produced, sources, ids, pending)
        sources = items
        produced = member.step(owners, items, items, ids, pending)
    members[-1].emit(owners, produced, sources, ids, pending)


def by_item(made: list[int]) -> Iterator[tuple[int, int, int]]:
    """``(item, start, end)`` for each item that produced Outputs: they are
    ``outputs[start:end]`` of the flat :data:`Produced` that ``made`` belongs to."""
    start = 0
    for index, run in groupby(made):
        end = start + sum(1 for _ in run)
        yield index, start, end
        start = end


def dead_letter(
    root: int | None,
    stage: str,
    error: str,
    message: str,
    record: bytes | None,
    errors: list[Any] | None = None,
    detail: str | None = None,
) -> dict[str, Any]:
    """Build one dead-letter entry, fit for JSON whatever the record's bytes; never raises.

    The record is kept as parsed JSON when it is standard JSON, else as text when it is
    UTF-8, else as ``record_base64`` (with ``record`` null), so its bytes stay recoverable.
    """
    entry: dict[str, Any] = {
        "line": root if root is not None and root > 0 else None,
        "stage": stage,
        "error": error,
        "message": message,
        "errors": None,
        "record": None,
    }
    try:
        entry["errors"] = _plain(errors)
        if record is not None:
            entry.update(_describe(record))
    except Exception as exc:  # noqa: BLE001 - a dead letter must never abandon its frame
        entry["errors"] = None
        entry["record"] = None
        entry["note"] = f"the record could not be described ({type(exc).__name__}); kept as bytes"
        if record is not None:
            entry["record_base64"] = base64.b64encode(record).decode("ascii")
    if detail:
        entry["traceback"] = detail
    return entry


def _describe(record: bytes) -> dict[str, Any]:
    try:
        # pydantic-core's parser has its own depth limit (no RecursionError) and, with
        # allow_inf_nan off, refuses what JSON itself refuses.
        return {"record": from_json(record, allow_inf_nan=False)}
    except ValueError:
        pass
    try:
        return {"record": record.decode("utf-8")}
    except UnicodeDecodeError:
        return {"record": None, "record_base64": base64.b64encode(record).decode("ascii")}


def _plain(errors: list[Any] | None) -> list[Any] | None:
    """pydantic ``errors()`` as plain JSON values (a loc tuple becomes a list, the rest text)."""
    if errors is None:
        return None
    plain: list[Any] = json.loads(json.dumps(errors, default=repr))
    return plain


def _errors_of(exc: ValidationError) -> list[Any]:
    try:
        errors: list[Any] = json.loads(exc.json(include_url=False))
    except (ValueError, RecursionError):
        # exc.json() fails on an input it cannot encode (bytes that are not UTF-8): the
        # record itself is in the dead letter anyway, so leave the inputs out.
        errors = exc.errors(include_url=False, include_input=False, include_context=False)
    return errors


def _text(value: object) -> str:
    """str(value) for a message, even when the object's own __str__ fails."""
    try:
        return str(value)
    except Exception as exc:  # noqa: BLE001 - user classes may break str()
        return f"<{type(value).__name__}; str() failed with {type(exc).__name__}>"


def _nonstandard_words(records: Sequence[bytes]) -> bool:
    """Whether any of ``records`` may hold NaN or Infinity (which only _parse tells apart)."""
    # Joined, one search each for the whole slice; find, not `in`: see StageRunner.dump.
    joined = b"\n".join(records)
    return joined.find(b"NaN") >= 0 or joined.find(b"Infinity") >= 0


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
        final: bool = False,
    ) -> None:
        self.stage = cls(config)
        #: Whether this stage's Outputs are the pipeline's results, which only the
        #: coordinator takes (the last stage of the last unit): they need no tags of their own.
        self.final = final
        self.stage_name = stage_name
        self.retries = retries
        self.timeout = timeout
        # Private memory when the worker keeps no file: the loop in step() is the same.
        self.current = current if current is not None else CurrentRecord(None)
        self._attempts = range(retries + 1)
        # Seconds of each process() call since the last account(): appended per call, added
        # up and bucketed once per batch.
        self._spent: list[float] = []
        self.max_record_size = max_record_size
        self._input = cls.Input
        self._output = cls.Output
        self._output_only = {cls.Output}
        self._serialize = cls.Output.__pydantic_serializer__.to_json
        self._stage_process = self.stage.process
        # Frames from another stageflow process hold one JSON document per line, so the
        # whole batch can be validated in one call; raw input lines are checked one by one.
        self._batch: TypeAdapter[list[Any]] | None = (
            TypeAdapter(list[cls.Input]) if trusted_input else None  # type: ignore[name-defined]
        )
        self._tags = random.Random(os.urandom(16)).getrandbits
        # Only an Output that can hold a float can hold one JSON would write as null.
        self._floats = may_hold_floats(cls.Output)
        if timeout is not None:
            signal.signal(signal.SIGALRM, _on_alarm)

    def setup(self) -> None:
        self.stage.setup()

    def run_batch(self, ids: Sequence[int], records: Sequence[bytes], pending: Pending) -> None:
        """Process one frame's records, appending what they produce to ``pending``; the
        time they spent in process() is added to it by :meth:`account`.

        Every record ends as outputs or as one dead letter, whatever its bytes: nothing
        raised for one record may cost the others of the frame their turn.
        """
        run_chain((self,), (), ids, records, pending)

    def admit(
        self, ids: Sequence[int], records: Sequence[bytes], pending: Pending
    ) -> tuple[list[int], list[Any], Sequence[bytes]]:
        """Validate a frame's records against the Input: (their positions, items, records)
        for those that pass; the others are dead-lettered."""
        items = self._validate_batch(records)
        if items is not None:
            return list(range(len(records))), items, records
        owners: list[int] = []
        valid: list[Any] = []
        sources: list[bytes] = []
        if _nonstandard_words(records):
            start = 0  # NaN or Infinity in there: only _parse tells them from words in a string
        else:
            # Raw lines, the usual case, validated at C speed. extend() keeps what it took
            # before a record that raises, so each record is validated once: the one that
            # raised is dead-lettered with what it raised, and the rest go on one by one.
            validate = self._input.model_validate_json
            try:
                valid.extend(map(validate, records))
            except Exception as exc:  # noqa: BLE001 - the record's own failure, handled below
                failed = len(valid)
                owners += range(failed)
                sources += records[:failed]
                self._refuse(ids, failed, records[failed], exc, pending)
                start = failed + 1
            else:
                return list(range(len(records))), valid, records
        for index in range(start, len(records)):
            record = records[index]
            try:
                item = self._parse(record)
            except Exception as exc:  # noqa: BLE001 - _refuse tells a bad record from a bug
                self._refuse(ids, index, record, exc, pending)
                continue
            owners.append(index)
            valid.append(item)
            sources.append(record)
        return owners, valid, sources

    def _refuse(
        self, ids: Sequence[int], index: int, record: bytes, exc: Exception, pending: Pending
    ) -> None:
        """Dead-letter the record at frame position ``index``, which failed to validate."""
        root, attempt = ids[index * 3], ids[index * 3 + 1]
        if isinstance(exc, ValidationError):
            self.reject(root, attempt, record, exc, pending)
        else:
            self.engine_failure(root, attempt, record, exc, pending)

    def step(
        self,
        owners: list[int],
        items: list[Any],
        sources: Sequence[bytes | BaseModel],
        ids: Sequence[int],
        pending: Pending,
    ) -> Produced:
        """Run process() on each item: the Outputs of those not dead-lettered, with the
        item each came from (:data:`Produced`). ``owners[i]`` is the frame position of item
        i's root and ``sources[i]`` what the item was validated from, for its dead letter.
        """
        made: list[int] = []
        outs: list[Any] = []
        if self.timeout is not None:  # every call under its alarm: the general path
            for index, item in enumerate(items):
                at = owners[index] * 3
                outputs = self.process_item(ids[at], ids[at + 1], item, sources[index], pending)
                if outputs:
                    outs += outputs
                    made += repeat(index, len(outputs))
            return made, outs
        # The loop every record of every stage goes through, so what it calls is bound
        # once. Each call begins by pointing the current-record file at its root (the slice's
        # ids are in it already), and one clock reading ends a call and begins the next.
        current = self.current
        where, when, base = current.where, current.started, current.base
        process, output, outputs_of = self._stage_process, self._output, self._outputs
        spent = self._spent.append
        mark, put = made.append, outs.append
        clock = perf_counter
        lists = False  # whether a list was taken unchecked, to be checked once at the end
        started = clock()
        for index, item in enumerate(items):
            owner = owners[index]
            where[0] = base + owner
            when[0] = started
            try:
                result = process(item)
                if type(result) is output:
                    put(result)
                    mark(index)
                elif type(result) is list:
                    outs += result
                    made += repeat(index, len(result))
                    lists = True
                else:
                    results = outputs_of(result)
                    outs += results
                    made += repeat(index, len(results))
            except (Exception, SystemExit) as exc:  # noqa: BLE001 - retried, then dead-lettered
                current.clear()
                retried = self.process_item(
                    ids[owner * 3],
                    ids[owner * 3 + 1],
                    item,
                    sources[index],
                    pending,
                    started,
                    exc,
                    "" if isinstance(exc, InvalidOutput) else traceback.format_exc(),
                )
                if retried:
                    outs += retried
                    made += repeat(index, len(retried))
                started = clock()
                continue
            now = clock()
            spent(now - started)
            started = now
        current.clear()
        if lists and not set(map(type, outs)) <= self._output_only:
            return self._converted(owners, made, outs, sources, ids, pending)
        return made, outs

    def _converted(
        self,
        owners: list[int],
        made: list[int],
        outs: list[Any],
        sources: Sequence[bytes | BaseModel],
        ids: Sequence[int],
        pending: Pending,
    ) -> Produced:
        """:meth:`step`'s outputs once some list held something other than this stage's
        Output, item by item: a dict valid as the Output becomes one, and an item with an
        output that cannot is dead-lettered (as it would have been at once, had its list
        been looked at in the loop; a record giving the same output again is not retried)."""
        kept_made: list[int] = []
        kept: list[Any] = []
        for index, start, end in by_item(made):
            try:
                group = [self._model(output) for output in outs[start:end]]
            except InvalidOutput as exc:
                at = owners[index] * 3
                self.fail(ids[at], ids[at + 1], exc, _text(exc), "", sources[index], pending)
                continue
            kept += group
            kept_made += repeat(index, len(group))
        return kept_made, kept

    def account(self, pending: Pending) -> None:
        """Add the time spent in process() since the last call to ``pending``, per bucket."""
        spent = self._spent
        if not spent:
            return
        name = self.stage_name
        pending.busy[name] = pending.busy.get(name, 0.0) + sum(spent)
        times = pending.times.get(name)
        if times is None:
            times = pending.times[name] = {}
        count_buckets(spent, times)
        spent.clear()

    def finish(self) -> tuple[list[bytes], list[dict[str, Any]]]:
        """Call the stage's finish() and return its serialised Outputs and any dead letter."""
        pending = Pending()
        self.current.hold(FINISH_IDS)
        flow((self,), (), 0, [0], self.finish_outputs(pending), [None], FINISH_IDS, pending)
        self.account(pending)
        return pending.records, [entry for _, _, entry in pending.dead]

    def finish_outputs(self, pending: Pending) -> Produced:
        """Call the stage's finish(): its Outputs, which belong to no input line, as made by
        the one item of the (null) root 0; none when finish() failed and was dead-lettered."""
        try:
            outputs = [self._model(out) for out in iter_outputs(self.stage.finish())]
            for output in outputs:
                self.dump(output)  # only to refuse what JSON cannot hold, as process() is
        except Exception as exc:  # noqa: BLE001 - a failing finish() is data, like process()
            message = _text(exc)
            log.error(
                "stage %r: finish() failed: %s: %s", self.stage_name, type(exc).__name__, message
            )
            entry = dead_letter(
                None,
                self.stage_name,
                type(exc).__name__,
                f"finish() failed: {message}",
                None,
                errors=exc.errors if isinstance(exc, InvalidOutput) else None,
                detail=traceback.format_exc(),
            )
            pending.dead.append([0, 0, entry])
            return [], []
        return [0] * len(outputs), outputs

    def _parse(self, record: bytes) -> Any:
        """Validate one raw input line: strict JSON, then the stage's Input."""
        problem = nonstandard_json(record)
        if problem is not None:
            detail: InitErrorDetails = {
                "type": "json_invalid",
                "loc": (),
                "input": record,
                "ctx": {"error": problem},
            }
            raise ValidationError.from_exception_data(self._input.__name__, [detail])
        return self._input.model_validate_json(record)

    def _dead(
        self, pending: Pending, root: int, attempt: int, record: bytes, entry: dict[str, Any]
    ) -> None:
        pending.dead.append([root, attempt, entry])
        pending.size += len(record)

    def reject(
        self, root: int, attempt: int, record: bytes, exc: ValidationError, pending: Pending
    ) -> None:
        """Dead-letter a record that does not validate against the stage's Input."""
        self._dead(pending, root, attempt, record, self._invalid(root, record, exc))

    def engine_failure(
        self, root: int, attempt: int, record: bytes, exc: Exception, pending: Pending
    ) -> None:
        """Dead-letter a record that failed outside process(): a bug, logged with its trace."""
        log.exception("stage %r: record of line %s failed inside the engine", self.stage_name, root)
        entry = dead_letter(
            root,
            self.stage_name,
            type(exc).__name__,
            _text(exc),
            record,
            detail=traceback.format_exc(),
        )
        self._dead(pending, root, attempt, record, entry)

    def _validate_batch(self, records: Sequence[bytes]) -> list[Any] | None:
        if self._batch is None or len(records) < 2:
            return None
        try:
            items = self._batch.validate_json(b"[" + b",".join(records) + b"]")
        except ValidationError:
            return None  # fall back to one record at a time, to name the bad one
        return items if len(items) == len(records) else None

    def process_item(
        self,
        root: int,
        attempt: int,
        item: Any,
        record: bytes | BaseModel,
        pending: Pending,
        started: float | None = None,
        failure: BaseException | None = None,
        detail: str = "",
    ) -> list[Any] | None:
        """Run process() on a valid Input with retries: its Outputs, or None if dead-lettered.

        ``record`` is what the item was validated from, for the dead letter: the wire bytes,
        or the item itself inside a fused group. :meth:`step` passes the first attempt's
        ``failure`` (with its traceback in ``detail``) and when it ``started``, when it made
        that attempt itself.
        """
        attempts: range | tuple[()] = self._attempts
        if failure is not None:
            # InvalidOutput: the same record would only give the same output again.
            attempts = () if isinstance(failure, InvalidOutput) else range(self.retries)
        outputs: list[Any] = []
        current = self.current
        if started is None:
            started = perf_counter()
        for _ in attempts:
            current.set(root, attempt, started)
            try:
                outputs = self._call(item)
                failure = None
                break
            except RecordTimeout:
                failure = RecordTimeout(f"process() took longer than {self.timeout}s")
                detail = ""
                break  # a hang is not retried: it would only hang again
            except InvalidOutput as exc:
                failure, detail = exc, ""
                break  # the same record would only give the same output again
            # sys.exit() in process() is the record's failure too: left to propagate, it
            # abandoned the frame and the run waited for it for ever.
            except (Exception, SystemExit) as exc:  # noqa: BLE001 - user code's errors are data
                failure, detail = exc, traceback.format_exc()
            finally:
                current.clear()
        self._spent.append(perf_counter() - started)
        if failure is None:
            return outputs
        attempts_note = (
            ""
            if isinstance(failure, (RecordTimeout, InvalidOutput))
            else (f" (after {self.retries + 1} attempts)")
        )
        self.fail(
            root, attempt, failure, f"{_text(failure)}{attempts_note}", detail, record, pending
        )
        return None

    def emit(
        self,
        owners: list[int],
        produced: Produced,
        sources: Sequence[bytes | BaseModel | None],
        ids: Sequence[int],
        pending: Pending,
    ) -> None:
        """Serialise the Outputs ``produced`` (as :meth:`step` returns them) into the outgoing
        frame, tag them, and acknowledge each root of the frame that left no output.

        The last output of each root takes the tag that makes its outputs' tags XOR to the
        root's own: the tracker's value for the root is then unchanged and there is nothing
        to acknowledge (tracker.py). Only a root that left no output (filtered,
        dead-lettered) is acknowledged.
        """
        made, outputs = produced
        limit = self.max_record_size
        try:
            data = list(map(self._serialize, outputs))
        except Exception:  # noqa: BLE001 - _checked names the Output, and dead-letters its item
            data = None
        if (
            data is None
            or (self._floats and holds_null(data))  # maybe a nan written as null
            or (limit is not None and data and max(map(len, data)) > limit)
        ):
            made, outputs, data = self._checked(owners, made, outputs, data, sources, ids, pending)
        pending.records += data
        pending.size += sum(map(len, data))
        roots = len(ids) // 3
        # One output for each root of the frame, in its order (a map or a check, all through
        # the group): an only output takes its root's very tag, so its ids are the root's.
        if len(made) == roots and list(map(owners.__getitem__, made)) == list(range(roots)):
            pending.ids += ids
            return
        if self.final:
            self._tag_results(owners, made, ids, pending)
            return
        tags = self._tags
        out_ids = pending.ids
        has_output = bytearray(roots)  # 1 where the root at that position left output
        family = -1  # the root whose outputs are being tagged, and the XOR of their tags
        xor = root = attempt = 0
        for owner in map(owners.__getitem__, made):
            if owner != family:  # outputs come in frame order: the last family is complete
                if family >= 0:
                    out_ids[-1] ^= ids[family * 3 + 2] ^ xor
                family, xor = owner, 0
                has_output[owner] = 1
                root, attempt = ids[owner * 3], ids[owner * 3 + 1]
            child = tags(63)
            xor ^= child
            out_ids += (root, attempt, child)
        if family >= 0:
            out_ids[-1] ^= ids[family * 3 + 2] ^ xor
        if has_output.count(0):
            acks = pending.acks
            for owner, made_any in enumerate(has_output):
                if not made_any:
                    acks += ids[owner * 3 : owner * 3 + 3]

    def _tag_results(
        self, owners: list[int], made: list[int], ids: Sequence[int], pending: Pending
    ) -> None:
        """:meth:`emit`'s ids for the pipeline's results, which nothing consumes after the
        coordinator: each record's last result takes the record's own tag and the others
        tag 0, so the coordinator's XOR for the root moves once per record, on its last
        result (:meth:`stageflow.engine.tracker.Tracker.results`). Made at C speed, with a
        step per record rather than per result; a record that left none is acknowledged."""
        of = list(map(owners.__getitem__, made))  # each result's record, by frame position
        count = len(of)
        at = list(map((3).__mul__, of))
        out = [0] * (3 * count)
        out[0::3] = map(ids.__getitem__, at)
        out[1::3] = map(ids.__getitem__, map((1).__add__, at))
        # A record's results are consecutive: its last one is where the next record's begin.
        ends = compress(range(count), map(ne, of, islice(of, 1, None)))
        for last in chain(ends, (count - 1,) if count else ()):
            out[3 * last + 2] = ids[at[last] + 2]
        pending.ids += out
        roots = len(ids) // 3
        left = set(of)
        if len(left) < roots:
            acks = pending.acks
            for owner in range(roots):
                if owner not in left:
                    acks += ids[owner * 3 : owner * 3 + 3]

    def _checked(
        self,
        owners: list[int],
        made: list[int],
        outputs: list[Any],
        data: list[bytes] | None,
        sources: Sequence[bytes | BaseModel | None],
        ids: Sequence[int],
        pending: Pending,
    ) -> tuple[list[int], list[Any], list[bytes]]:
        """Look at ``outputs`` item by item (serialising them, unless ``data`` holds their JSON
        already), dead-lettering each item one of whose Outputs cannot leave (it cannot be
        serialised, holds a nan or infinite float, or is over the size limit); what is left,
        with its JSON."""
        kept_made: list[int] = []
        kept: list[Any] = []
        kept_data: list[bytes] = []
        limit = self.max_record_size
        for index, start, end in by_item(made):
            group = outputs[start:end]
            try:
                texts = data[start:end] if data is not None else list(map(self._serialize, group))
                if self._floats:
                    for output, text in zip(group, texts, strict=True):
                        self.refuse_nulled_floats(output, text)
                if limit is not None and sum(map(len, texts)) > limit:
                    self._check_sizes(texts)
            except Exception as exc:  # noqa: BLE001 - an Output that cannot be serialised is data
                detail = "" if isinstance(exc, InvalidOutput) else traceback.format_exc()
                at = owners[index] * 3
                self.fail(ids[at], ids[at + 1], exc, _text(exc), detail, sources[index], pending)
                continue
            kept_made += made[start:end]
            kept += group
            kept_data += texts
        return kept_made, kept, kept_data

    def fail(
        self,
        root: int,
        attempt: int,
        failure: BaseException,
        message: str,
        detail: str,
        record: bytes | BaseModel | None,
        pending: Pending,
    ) -> None:
        """Dead-letter the record an Output came from; a model is written as its JSON."""
        if isinstance(record, BaseModel):
            record = type(record).__pydantic_serializer__.to_json(record)
        entry = dead_letter(
            root,
            self.stage_name,
            type(failure).__name__,
            message,
            record,
            errors=failure.errors if isinstance(failure, InvalidOutput) else None,
            detail=detail or None,
        )
        self._dead(pending, root, attempt, record or b"", entry)

    def _check_sizes(self, outputs: list[bytes]) -> None:
        limit = self.max_record_size
        if limit is None:
            return
        for output in outputs:
            if len(output) > limit:
                raise InvalidOutput(
                    f"process() returned an output of {len(output)} bytes, more than the "
                    f"{limit}-byte limit of one frame; raise {RAISE_LIMIT} or emit smaller "
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
        output = self._output
        if type(result) is output:
            return [result]  # the common one-in, one-out case, kept short
        if type(result) is list and set(map(type, result)) <= self._output_only:
            return list(result)  # and a list of this stage's Outputs, built by the stage
        return [self._model(out) for out in iter_outputs(result)]

    def dump(self, output: BaseModel) -> bytes:
        """An Output as JSON, refusing a nan or infinite float (JSON would write null)."""
        data = self._serialize(output)
        if self._floats:
            self.refuse_nulled_floats(output, data)
        return data

    def refuse_nulled_floats(self, output: BaseModel, data: bytes) -> None:
        """Raise InvalidOutput if ``data``, the JSON of ``output``, holds a nan or infinite
        float written as null."""
        # pydantic writes a nan or infinite float as null: look for one only where a null is.
        # (find, not `in`: for bytes, `in` first tries the operand as an int and makes and
        # drops a TypeError, which costs more than the search.)
        if data.find(b"null") < 0:
            return
        found = non_finite_field(output)
        if found is not None:
            field, value = found
            raise InvalidOutput(
                f"process() returned a {type(output).__name__} whose field {field!r} is "
                f"{value}, which JSON cannot hold (it would be written as null); return a "
                "finite number, or None in an optional field"
            )

    def _model(self, output: Any) -> BaseModel:
        if isinstance(output, self._output):
            return output  # built by this stage: no second validation
        if isinstance(output, dict):
            try:
                model = self._output.model_validate(output)
            except ValidationError as exc:
                errors = _errors_of(exc)
                fields = ", ".join(_where(error) for error in errors)
                raise InvalidOutput(
                    f"process() returned a dict that is not a valid {self._output.__name__}: "
                    f"{fields}",
                    errors,
                ) from None
            return model
        raise InvalidOutput(
            f"process() returned {type(output).__name__}, expected {self._output.__name__}"
        )

    def _invalid(self, root: int, record: bytes, exc: ValidationError) -> dict[str, Any]:
        errors = _errors_of(exc)
        where = _where(errors[0]) if errors else f"(record): {_text(exc)}"
        return dead_letter(
            root,
            self.stage_name,
            "ValidationError",
            f"record does not match {self._input.__name__}: {where}",
            record,
            errors=errors,
        )


def _where(error: dict[str, Any]) -> str:
    """``field.path: message`` for one pydantic error."""
    loc = ".".join(str(part) for part in error.get("loc", ())) or "(record)"
    return f"{loc}: {error.get('msg', '')}"
