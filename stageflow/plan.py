"""The fusion plan: which consecutive stages share a worker process, decided before a run.

Every stage boundary that is a process boundary costs a serialisation, a send, a parse and a
validation per record, so consecutive stages run in one process wherever the user cannot tell
the difference. The plan is plain data computed from the pipeline; the engine only executes
it, one :class:`Unit` (a stage, or a fused group of stages) per set of worker processes.

The rules:

- Consecutive stages fuse unless something below makes a boundary between them.
- A stage that keeps state is never fused with a neighbour: one that declares
  ``stateful = True``, or one that leaves ``stateful`` unset and overrides
  :meth:`Stage.finish` (its final outputs summarise what its own workers saw, so its worker
  count is part of its meaning, and its finish must run after everything upstream finished).
  ``stateful = False`` declares a finish() that does per-process work only.
- A stage with ``fuse: false`` in the pipeline file runs in its own processes.
- An autoscaled stage (``workers: {min, max}``) runs in its own processes: a group's process
  count is the sum of its stages' counts, so growing it would also give its fixed neighbours
  processes they did not ask for, and its bounds would have to be reconciled with theirs.
- ``fuse=False`` (``stageflow run --no-fuse``) makes every stage its own unit.
- A fused group runs as many processes as its stages ask for together, each hosting the
  whole group: stages with ``workers`` 1, 2 and 1 become 4 processes of the group. So the
  number of processes stays what the file asks for, and each stage gets at least as many
  instances as it asked for (``setup()`` runs once in each).
- The engine places, supervises, redelivers to and scales units, never single stages inside
  one: a worker that dies takes its whole group's records in flight with it, and they are
  delivered again to the group; scaling a fused stage scales its group.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import TYPE_CHECKING

from stageflow.stage import Stage

if TYPE_CHECKING:
    from stageflow.pipeline import BoundStage, WorkerBounds

__all__ = ["FusionPlan", "Unit", "keeps_state", "plan_fusion"]

#: Why two neighbours are not fused; the keys are what the graph's JSON carries.
REASONS = {
    "no-fuse": "fusion is turned off for this run",
    "fuse-false": "`fuse: false` in the pipeline file",
    "stateful": "the stage keeps state (finish() or `stateful = True`)",
    "joined": "one of the two is served only by joined workers (`workers: 0`)",
    "keyed": "the stage is keyed (`key:`): its records are routed by key as they enter it",
    "autoscaled": "one of the two autoscales (`workers: {min, max}`)",
}


def keeps_state(cls: type[Stage]) -> bool:
    """Whether a stage's instances carry state across records, which fusion must respect."""
    declared = getattr(cls, "stateful", None)
    return cls.finish is not Stage.finish if declared is None else bool(declared)


@dataclass(frozen=True)
class Unit:
    """What one set of worker processes runs: one stage, or consecutive stages fused."""

    index: int
    first: int  # the index of its first stage in the pipeline
    stages: tuple[BoundStage, ...]

    @property
    def name(self) -> str:
        return "+".join(stage.name for stage in self.stages)

    @property
    def workers(self) -> int:
        return sum(stage.workers for stage in self.stages)

    @property
    def bounds(self) -> WorkerBounds | None:
        """The autoscaler's bounds: an autoscaled stage is always a unit of its own."""
        return self.stages[0].bounds

    @property
    def fused(self) -> bool:
        return len(self.stages) > 1


@dataclass(frozen=True)
class FusionPlan:
    """The units of a pipeline in flow order, and why each process boundary is one.

    ``boundaries[i]`` is about the edge from stage ``i`` to stage ``i + 1``: None when the two
    are fused, else a key of :data:`REASONS`.
    """

    units: tuple[Unit, ...]
    boundaries: tuple[str | None, ...]

    def unit_of(self, stage: int) -> Unit:
        """The unit that runs the pipeline's stage number ``stage``."""
        for unit in self.units:
            if unit.first <= stage < unit.first + len(unit.stages):
                return unit
        raise IndexError(stage)

    def describe(self) -> list[str]:
        """One line per fused group, e.g. ``fused: split + tokenize (4 processes)``."""
        return [
            f"fused: {' + '.join(s.name for s in unit.stages)} ({unit.workers} processes)"
            for unit in self.units
            if unit.fused
        ]


def plan_fusion(stages: Sequence[BoundStage], *, fuse: bool = True) -> FusionPlan:
    """Group consecutive ``stages`` into units by the rules in this module's docstring."""
    boundaries = tuple(
        _boundary(upstream, downstream, fuse)
        for upstream, downstream in pairwise(stages)
    )
    units: list[Unit] = []
    group: list[BoundStage] = []
    first = 0
    for index, stage in enumerate(stages):
        group.append(stage)
        if index == len(stages) - 1 or boundaries[index] is not None:
            units.append(Unit(len(units), first, tuple(group)))
            group = []
            first = index + 1
    return FusionPlan(tuple(units), boundaries)


def _boundary(upstream: BoundStage, downstream: BoundStage, fuse: bool) -> str | None:
    if not fuse:
        return "no-fuse"
    if not upstream.spec.fuse or not downstream.spec.fuse:
        return "fuse-false"
    if upstream.stateful or downstream.stateful:
        return "stateful"
    if upstream.bounds is not None or downstream.bounds is not None:
        return "autoscaled"
    if (upstream.workers == 0) != (downstream.workers == 0):
        return "joined"  # a stage only joined workers serve runs where they are
    if downstream.key is not None:
        return "keyed"
    return None
