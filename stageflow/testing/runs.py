"""Running a stage or a pipeline in the calling process, with the engine's own per-record code.

A real run moves records between worker processes in JSON frames. Here each stage gets the
same :class:`~stageflow.engine.runner.StageRunner` a worker hosts, called directly, stage
after stage, in the order the coordinator drives them: every input record through every
stage, then each stage's ``finish()`` with its outputs flowing into the stages after it. So
validation, retries, timeouts, fan-out, filtering, serialisation and dead-letter entries
are the engine's, not a copy of them, and a test run cannot drift from a real one.

No process is started and no socket opened. What only a real run shows: a worker that dies
(restarts, poison records), how records are shared between the workers of a stage (here
one instance runs each stage, so a stage with ``workers: 4`` calls ``finish()`` once, not
four times), and the coordinator's own refusal of an input record larger than one frame
(32 MiB by default, dead-lettered as ``RecordTooLarge`` before any stage sees it). Results
come in input order; a real run with several workers per stage yields them as they
complete. Inputs are taken as :meth:`stageflow.Pipeline.run` takes them; reading lines from
a file (blank lines, a byte-order mark, line numbers) is ``stageflow run``'s part.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from stageflow.engine.coordinator import EngineOptions
from stageflow.engine.report import RunReport
from stageflow.engine.run import _numbered
from stageflow.engine.runner import Pending, StageRunner
from stageflow.errors import EngineError
from stageflow.pipeline import BoundStage, Pipeline
from stageflow.plugins import StageRegistry
from stageflow.stage import Stage

__all__ = ["PipelineResult", "StageResult", "load_pipeline", "run_pipeline", "run_stage"]

PipelineLike = Pipeline | str | os.PathLike[str] | Mapping[str, Any] | Sequence[Mapping[str, Any]]


@dataclass
class PipelineResult:
    """What an in-process run of a pipeline produced.

    ``outputs`` are the last stage's Output models, as :meth:`stageflow.Pipeline.run`
    yields them; ``lines`` the same records as the JSON ``stageflow run`` writes;
    ``dead_letters`` every dead-letter entry, exactly as a real run writes it to
    ``--dead-letter``; ``report`` the counts a real run reports.
    """

    outputs: list[Any] = field(default_factory=list)
    lines: list[bytes] = field(default_factory=list)
    dead_letters: list[dict[str, Any]] = field(default_factory=list)
    report: RunReport = field(default_factory=lambda: RunReport("(in process)"))


@dataclass
class StageResult(PipelineResult):
    """What :func:`run_stage` produced: ``outputs`` from ``process()``, and ``finish_outputs``.

    ``lines`` holds the JSON of ``outputs`` followed by that of ``finish_outputs``.
    """

    finish_outputs: list[Any] = field(default_factory=list)


def run_stage(
    stage: type[Stage] | str,
    inputs: Iterable[Any],
    config: Mapping[str, Any] | BaseModel | None = None,
    *,
    retries: int = 2,
    timeout: float | None = None,
    registry: StageRegistry | None = None,
) -> StageResult:
    """Run one stage over ``inputs`` in this process, the way one worker of a real run would.

    ``stage`` is a :class:`~stageflow.Stage` subclass or a registered stage name; ``inputs``
    are dicts, Input models or JSON ``str``/``bytes``, validated like the first stage's
    input lines; ``config`` is the stage's ``config:`` block (a mapping or a Config model),
    validated like a pipeline file's. ``retries`` and ``timeout`` are the pipeline file's
    per-stage settings. A failing ``setup()`` raises :class:`~stageflow.errors.EngineError`
    (a real run exits with status 3); everything else that fails is dead-lettered.
    """
    if isinstance(config, BaseModel):
        config = config.model_dump(mode="json")
    name = stage if isinstance(stage, str) else stage.name
    spec: dict[str, Any] = {"name": name, "uses": stage, "retries": retries, "timeout": timeout}
    if config:
        spec["config"] = dict(config)
    pipeline = Pipeline(name, [spec], registry=registry)
    result = StageResult(report=RunReport(pipeline.name))
    run = _LocalRun(pipeline, result)
    run.execute(inputs)
    parse = pipeline.stages[0].cls.Output.model_validate_json
    # Results of roots that came from input lines hold process() outputs; the finish()
    # outputs of the only stage come after them, as the last stage's do in a real run.
    result.outputs = [parse(line) for line in result.lines[: run.from_inputs]]
    result.finish_outputs = [parse(line) for line in result.lines[run.from_inputs :]]
    return result


def run_pipeline(
    pipeline: PipelineLike,
    inputs: Iterable[Any],
    *,
    registry: StageRegistry | None = None,
    batch_size: int | None = None,
) -> PipelineResult:
    """Run a whole pipeline over ``inputs`` in this process, with a real run's results.

    ``pipeline`` is a :class:`~stageflow.Pipeline`, the path of a pipeline file, the parsed
    content of one (a mapping) or a list of stage mappings (the Python-objects form, where
    ``uses`` may be a stage class). ``inputs`` are what :meth:`stageflow.Pipeline.run`
    takes. ``batch_size`` is the records per frame (the engine's default when None).
    """
    bound = load_pipeline(pipeline, registry=registry)
    result = PipelineResult(report=RunReport(bound.name))
    _LocalRun(bound, result, batch_size).execute(inputs)
    parse = bound.stages[-1].cls.Output.model_validate_json
    result.outputs = [parse(line) for line in result.lines]
    return result


def load_pipeline(pipeline: PipelineLike, *, registry: StageRegistry | None = None) -> Pipeline:
    """Build a :class:`~stageflow.Pipeline` from any form :func:`run_pipeline` accepts."""
    if isinstance(pipeline, Pipeline):
        return pipeline
    if isinstance(pipeline, (str, os.PathLike)):
        return Pipeline.from_file(pipeline, registry=registry)
    if isinstance(pipeline, Mapping):
        return Pipeline.from_dict(pipeline, registry=registry)
    return Pipeline("pipeline", list(pipeline), registry=registry)


@dataclass
class _Root:
    """The outcome of one input record (or one finish() output) across the stages."""

    results: list[bytes] = field(default_factory=list)
    dead: list[dict[str, Any]] = field(default_factory=list)


class _LocalRun:
    """The coordinator's order of work, with one StageRunner per stage and no I/O."""

    def __init__(
        self, pipeline: Pipeline, result: PipelineResult, batch_size: int | None = None
    ) -> None:
        defaults = EngineOptions()
        self.pipeline = pipeline
        self.result = result
        self.batch_size = batch_size or defaults.batch_size
        # The byte limit a worker gets for one output record (half the message limit).
        self.frame_bytes = defaults.max_message_size // 2
        self.runners: list[StageRunner] = []
        self.roots: dict[int, _Root] = {}
        self.from_inputs = 0
        self._next_synthetic = -1

    def execute(self, inputs: Iterable[Any]) -> None:
        started = time.monotonic()
        timed = [s.name for s in self.pipeline.stages if s.spec.timeout is not None]
        if timed and threading.current_thread() is not threading.main_thread():
            raise EngineError(
                f"stage {timed[0]!r} has a timeout, which in process needs the main thread "
                "(it uses SIGALRM); run the test in the main thread or drop the timeout"
            )
        previous = signal.getsignal(signal.SIGALRM)
        try:
            self.runners = [
                self._runner(stage, index) for index, stage in enumerate(self.pipeline.stages)
            ]
            for runner in self.runners:
                try:
                    runner.setup()
                except Exception as exc:
                    raise EngineError(
                        f"stage {runner.stage_name!r} could not start: setup() raised "
                        f"{type(exc).__name__}: {exc}; a real run exits with status 3"
                    ) from exc
            for frame in _frames(_numbered(inputs), self.batch_size):
                self._feed(frame)
            self.from_inputs = len(self.result.lines)
            self._finish()
        finally:
            signal.signal(signal.SIGALRM, previous)
        report = self.result.report
        report.finished = True
        report.seconds = time.monotonic() - started

    def _runner(self, stage: BoundStage, index: int) -> StageRunner:
        config = None
        if stage.cls.Config is not None:
            # A worker receives its config as JSON; the same round trip here.
            config = stage.cls.Config.model_validate_json(stage.config_json())
        return StageRunner(
            stage.cls,
            stage.name,
            config,
            retries=stage.spec.retries,
            timeout=stage.spec.timeout,
            trusted_input=index > 0,
            max_record_size=self.frame_bytes,
        )

    def _feed(self, frame: list[tuple[int, bytes]]) -> None:
        report = self.result.report
        ids: list[int] = []
        records: list[bytes] = []
        for seq, record in frame:
            report.records_in += 1
            report.last_line_read = seq
            self.roots[seq] = _Root()
            ids += (seq, 0, 0)
            records.append(record)
        self._flow(0, ids, records)
        for seq, _ in frame:
            self._emit(self.roots.pop(seq))
            report.records_done += 1

    def _flow(self, index: int, ids: list[int], records: list[bytes]) -> None:
        """Run a frame through stage ``index`` and everything after it."""
        if index == len(self.runners):
            for position, record in enumerate(records):
                self.roots[ids[position * 3]].results.append(record)
            return
        runner = self.runners[index]
        pending = Pending()
        runner.run_batch(ids, records, pending)
        runner.account(pending)
        # Counted as the coordinator counts a worker's ack; the one instance is worker #0.
        for name, count in pending.processed.items():
            times = pending.times.get(name, {})
            busy = [pending.busy.get(name, 0.0), [n for pair in times.items() for n in pair]]
            self.result.report.add_ack(name, f"{name}#0", count, busy)
        for root, _attempt, entry in pending.dead:
            self.roots[root].dead.append(_as_sent(entry))
        if pending.records:
            self._flow(index + 1, pending.ids, pending.records)

    def _finish(self) -> None:
        """Each stage's finish() in turn; its outputs enter the next stage as new records."""
        last = len(self.runners) - 1
        for index, runner in enumerate(self.runners):
            records, dead = runner.finish()
            for entry in dead:
                self._dead_letter(_as_sent(entry))
            if index == last:
                self._emit(_Root(results=records))
                continue
            ids: list[int] = []
            for _ in records:
                self.roots[self._next_synthetic] = _Root()
                ids += (self._next_synthetic, 0, 0)
                self._next_synthetic -= 1
            if records:
                self._flow(index + 1, ids, records)
            for seq in sorted(self.roots, reverse=True):
                self._emit(self.roots.pop(seq))

    def _emit(self, root: _Root) -> None:
        for entry in root.dead:
            self._dead_letter(entry)
        self.result.lines += root.results
        self.result.report.results += len(root.results)

    def _dead_letter(self, entry: dict[str, Any]) -> None:
        self.result.dead_letters.append(entry)
        self.result.report.add_dead_letter(entry)


def _as_sent(entry: dict[str, Any]) -> dict[str, Any]:
    """A dead-letter entry as the coordinator receives it: it crossed the wire as JSON."""
    loaded: dict[str, Any] = json.loads(json.dumps(entry))
    return loaded


def _frames(source: Iterator[Any], size: int) -> Iterator[list[tuple[int, bytes]]]:
    frame: list[tuple[int, bytes]] = []
    for item in source:
        frame.append(item)
        if len(frame) == size:
            yield frame
            frame = []
    if frame:
        yield frame
