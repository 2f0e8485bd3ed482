"""A fused group: consecutive stages in one worker process, records handed over in memory.

:class:`GroupRunner` has :class:`~stageflow.engine.runner.StageRunner`'s interface (setup,
run_batch, finish) and is made of one StageRunner per stage: the first validates the frame's
records, each runs its own process() with its own retries and timeout, and only the last
serialises what leaves the group. Between two members nothing is serialised: the next stage
gets the very instance when its Input is the class the previous stage returned, and otherwise
a model validated from the Output's fields (the dict its JSON would have held, so aliases,
``extra="forbid"`` and defaults behave exactly as across a process boundary).

A record that fails inside the group is dead-lettered under the stage it failed in, with its
input line. Each stage's processed count is the number of records that entered it, as if the
stages ran in processes of their own.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import pairwise
from typing import Any

from pydantic import BaseModel, ValidationError

from stageflow.engine.runner import CurrentRecord, Forward, Pending, StageRunner
from stageflow.engine.strict import may_hold_floats
from stageflow.errors import InvalidOutput
from stageflow.stage import Stage

__all__ = ["GroupRunner", "build_runner"]


class GroupRunner:
    """Runs consecutive stages, given as their StageRunners in flow order, as one."""

    def __init__(self, members: Sequence[StageRunner]) -> None:
        self.members = tuple(members)
        self._entered = [0] * len(self.members)
        for position, (upstream, downstream) in enumerate(pairwise(self.members), start=1):
            upstream.forward = self._handoff(position, upstream, downstream)

    def setup(self) -> None:
        for member in self.members:
            member.setup()

    def run_batch(self, ids: Sequence[int], records: Sequence[bytes], pending: Pending) -> None:
        """Process one frame's records through every stage of the group."""
        self.members[0].run_batch(ids, records, pending)
        self._count(pending)
        for member in self.members[1:]:
            member.account(pending)

    def finish(self) -> tuple[list[bytes], list[dict[str, Any]]]:
        """Finish the stages in flow order; each one's final Outputs go through the rest."""
        pending = Pending()
        for member in self.members:
            member.finish_into(pending)
            member.account(pending)
        return pending.records, [entry for _, _, entry in pending.dead]

    def _count(self, pending: Pending) -> None:
        entered = self._entered
        for position in range(1, len(entered)):
            if entered[position]:
                name = self.members[position].stage_name
                pending.processed[name] = pending.processed.get(name, 0) + entered[position]
                entered[position] = 0

    def _handoff(self, position: int, upstream: StageRunner, downstream: StageRunner) -> Forward:
        """The upstream stage's ``forward``: run its Outputs through the downstream stage."""
        produced: type[BaseModel] = upstream.stage.Output
        expected: type[BaseModel] = downstream.stage.Input
        as_fields = produced.__pydantic_serializer__.to_python
        as_json = produced.__pydantic_serializer__.to_json
        validate = expected.model_validate
        process = downstream.process_item
        # Across a process boundary a nan or infinite float is refused when it is written;
        # it must be refused here too, or fusion would let through what a hop rejects.
        check = upstream.dump if may_hold_floats(produced) else None
        entered = self._entered

        def forward(
            root: int,
            attempt: int,
            outputs: list[Any],
            record: bytes | BaseModel | None,
            pending: Pending,
        ) -> int:
            if check is not None:
                try:
                    for output in outputs:
                        check(output)
                except InvalidOutput as exc:
                    upstream.fail(root, attempt, exc, str(exc), "", record, pending)
                    return 0
            entered[position] += len(outputs)
            xor = 0
            for output in outputs:
                try:
                    if type(output) is expected:
                        item: Any = output
                    else:
                        item = validate(as_fields(output))
                    results = process(root, attempt, item, item, pending)
                    if results is not None:
                        xor ^= downstream.forward(root, attempt, results, item, pending)
                except ValidationError as exc:
                    downstream.reject(root, attempt, as_json(output), exc, pending)
                except Exception as exc:  # noqa: BLE001 - engine_failure logs the traceback
                    downstream.engine_failure(root, attempt, as_json(output), exc, pending)
            return xor

        return forward


def build_runner(
    stages: Sequence[dict[str, Any]],
    load: Callable[[dict[str, Any]], type[Stage]],
    *,
    trusted_input: bool,
    current: CurrentRecord | None,
    max_record_size: int | None,
) -> StageRunner | GroupRunner:
    """The runner of one plan unit: a StageRunner for one stage, a GroupRunner for several.

    ``stages`` holds one dict per stage (``stage``, ``uses`` and maybe the class by value,
    ``config`` as JSON, ``retries``, ``timeout``), as the coordinator puts them in the
    worker's settings; ``load`` turns one such dict into the stage class
    (:func:`stageflow.engine.shipping.load_stage_class`).
    """
    runners = []
    for position, spec in enumerate(stages):
        cls = load(spec)
        config = None
        if cls.Config is not None:
            config = cls.Config.model_validate_json(spec["config"])
        runners.append(
            StageRunner(
                cls,
                spec["stage"],
                config,
                retries=spec["retries"],
                timeout=spec["timeout"],
                trusted_input=trusted_input and position == 0,
                current=current.for_member(position) if current is not None else None,
                # Only what leaves the group travels in a frame.
                max_record_size=max_record_size if position == len(stages) - 1 else None,
            )
        )
    return runners[0] if len(runners) == 1 else GroupRunner(runners)
