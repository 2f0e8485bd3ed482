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

from stageflow.engine.runner import (
    FINISH_IDS,
    CurrentRecord,
    Handoff,
    Pending,
    Produced,
    StageRunner,
    by_item,
    flow,
    run_chain,
)
from stageflow.engine.strict import finite_slice_test, holds_null, may_hold_floats
from stageflow.errors import InvalidOutput
from stageflow.stage import Stage

__all__ = ["GroupRunner", "build_runner"]


class GroupRunner:
    """Runs consecutive stages, given as their StageRunners in flow order, as one."""

    def __init__(self, members: Sequence[StageRunner]) -> None:
        self.members = tuple(members)
        self._handoffs = tuple(_handoff(up, down) for up, down in pairwise(self.members))

    def setup(self) -> None:
        for member in self.members:
            member.setup()

    def run_batch(self, ids: Sequence[int], records: Sequence[bytes], pending: Pending) -> None:
        """Process one frame's records through every stage of the group."""
        run_chain(self.members, self._handoffs, ids, records, pending)

    def account(self, pending: Pending) -> None:
        for member in self.members:
            member.account(pending)

    def finish(self) -> tuple[list[bytes], list[dict[str, Any]]]:
        """Finish the stages in flow order; each one's final Outputs go through the rest."""
        pending = Pending()
        self.members[0].current.hold(FINISH_IDS)
        for position, member in enumerate(self.members):
            produced = member.finish_outputs(pending)
            flow(self.members, self._handoffs, position, [0], produced, [None], FINISH_IDS, pending)
        self.account(pending)
        return pending.records, [entry for _, _, entry in pending.dead]


def _handoff(upstream: StageRunner, downstream: StageRunner) -> Handoff:
    """What carries the upstream stage's Outputs to the downstream one, in memory."""
    returned: type[BaseModel] = upstream.stage.Output
    expected: type[BaseModel] = downstream.stage.Input
    as_fields = returned.__pydantic_serializer__.to_python
    as_json = returned.__pydantic_serializer__.to_json
    validate = expected.model_validate
    # Across a process boundary a nan or infinite float is refused when it is written; it
    # must be refused here too, or fusion would let through what a hop rejects. Where the
    # floats sit in plain fields, a look at them (finite) stands in for writing the JSON.
    check = upstream.dump if may_hold_floats(returned) else None
    finite = finite_slice_test(returned) if check is not None else None
    name = downstream.stage_name

    def written(outputs: list[Any]) -> list[bytes] | None:
        """The Outputs' JSON, written at C speed, where no quick look can find their floats;
        None where there is a quick look, or when one cannot be written (the item-by-item
        path meets that again)."""
        if finite is not None:
            return None
        try:
            return list(map(as_json, outputs))
        except Exception:  # noqa: BLE001 - item by item, check() names it
            return None

    def all_finite(outputs: list[Any], texts: list[bytes] | None) -> bool:
        """True when no Output of the slice holds a nan or infinite float: by the quick test
        where there is one, else by their JSON holding no null."""
        if finite is not None:
            return finite(outputs)
        return texts is not None and not holds_null(texts)

    def handoff(
        owners: list[int],
        produced: Produced,
        sources: Sequence[Any],
        ids: Sequence[int],
        pending: Pending,
    ) -> tuple[list[int], list[Any]]:
        made, outputs = produced
        texts = written(outputs) if check is not None else None
        refuse = check is not None and not all_finite(outputs, texts)
        if not refuse and (not outputs or set(map(type, outputs)) == {expected}):
            # The very instances, the usual case, at C speed.
            processed = pending.processed
            processed[name] = processed.get(name, 0) + len(outputs)
            return list(map(owners.__getitem__, made)), outputs
        return item_by_item(owners, made, outputs, texts, refuse, sources, ids, pending)

    def item_by_item(
        owners: list[int],
        made: list[int],
        outputs: list[Any],
        texts: list[bytes] | None,
        refuse: bool,
        sources: Sequence[Any],
        ids: Sequence[int],
        pending: Pending,
    ) -> tuple[list[int], list[Any]]:
        """The hand-off one item at a time, in order: an item with an Output JSON could not
        hold is dead-lettered under the upstream stage, and an Output the next Input refuses
        under the downstream one."""
        kept_owners: list[int] = []
        items: list[Any] = []
        entered = 0
        for index, start, end in by_item(made):
            owner = owners[index]
            at = owner * 3
            if refuse:
                try:
                    for position in range(start, end):
                        output = outputs[position]
                        if texts is not None:
                            upstream.refuse_nulled_floats(output, texts[position])
                        elif finite is None or not finite((output,)):
                            assert check is not None
                            check(output)
                except InvalidOutput as exc:
                    upstream.fail(ids[at], ids[at + 1], exc, str(exc), "", sources[index], pending)
                    continue
            entered += end - start
            for output in outputs[start:end]:
                if type(output) is expected:
                    item = output
                else:
                    try:
                        item = validate(as_fields(output))
                    except ValidationError as exc:
                        downstream.reject(ids[at], ids[at + 1], as_json(output), exc, pending)
                        continue
                    except Exception as exc:  # noqa: BLE001 - engine_failure logs the traceback
                        downstream.engine_failure(
                            ids[at], ids[at + 1], as_json(output), exc, pending
                        )
                        continue
                items.append(item)
                kept_owners.append(owner)
        processed = pending.processed
        processed[name] = processed.get(name, 0) + entered
        return kept_owners, items

    return handoff


def build_runner(
    stages: Sequence[dict[str, Any]],
    load: Callable[[dict[str, Any]], type[Stage]],
    *,
    trusted_input: bool,
    current: CurrentRecord | None,
    max_record_size: int | None,
    final: bool = False,
) -> StageRunner | GroupRunner:
    """The runner of one plan unit: a StageRunner for one stage, a GroupRunner for several.

    ``stages`` holds one dict per stage (``stage``, ``uses`` and maybe the class by value,
    ``config`` as JSON, ``retries``, ``timeout``), as the coordinator puts them in the
    worker's settings; ``load`` turns one such dict into the stage class
    (:func:`stageflow.engine.shipping.load_stage_class`). ``final``: the unit is the
    pipeline's last, so what its last stage returns are the pipeline's results.
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
                final=final and position == len(stages) - 1,
            )
        )
    return runners[0] if len(runners) == 1 else GroupRunner(runners)
