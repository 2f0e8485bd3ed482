"""The graph model: a pipeline reduced once to plain data that every renderer draws.

Renderers never look at :class:`~stageflow.pipeline.Pipeline` or at the stage classes; they
read a :class:`Graph`. That keeps each renderer a pure function of data, and the JSON
format (:mod:`stageflow.graph.json`) a faithful dump of exactly what the drawings show.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, PydanticUserError

from stageflow.compat import Mismatch
from stageflow.pipeline import BoundStage, Pipeline

if TYPE_CHECKING:
    from stageflow.graph.overlay import Overlay

__all__ = [
    "FUSED_MARKER",
    "Edge",
    "Graph",
    "ModelRef",
    "Problem",
    "StageNode",
    "build_graph",
    "visible",
]

FUSED_MARKER = "◆ fused: same process"
"""The html page's mark on an edge whose two stages run fused in one worker process; the
other drawings caption each fused stage with its group and draw such edges bold."""


@dataclass(frozen=True)
class ModelRef:
    """A pydantic model as the graph shows it.

    ``id`` is ``module:QualName``, unique within one graph; ``name`` is the class name the
    drawings print. ``schema`` is ``model_json_schema()``, or None with the reason in
    ``schema_error`` when the model has no JSON Schema (e.g. an arbitrary-type field).
    """

    id: str
    name: str
    schema: Mapping[str, Any] | None
    schema_error: str | None = None


@dataclass(frozen=True)
class StageNode:
    """One stage: what the pipeline file says and what the stage class declares."""

    index: int
    name: str
    uses: str
    reference: str
    workers: int
    plugin: str | None
    distribution: str | None
    version: str | None
    input: ModelRef
    output: ModelRef
    config: ModelRef | None
    config_values: Mapping[str, Any] | None
    fused_group: int | None = None  # 1, 2, ... for stages fused with a neighbour
    group_workers: int = 0  # processes of that fused group
    #: ``(min, max)`` of an autoscaled stage (``workers`` is then its count at the start).
    bounds: tuple[int, int] | None = None

    @property
    def fusion_label(self) -> str | None:
        """E.g. "fused group 1 · 4 processes", or None for a stage in processes of its own."""
        if self.fused_group is None:
            return None
        return f"fused group {self.fused_group} · {self.group_workers} processes"

    @property
    def workers_label(self) -> str:
        """"1 worker", "N workers" or "1..8 workers (autoscaled)", as every format shows it."""
        if self.bounds is not None:
            return f"{self.bounds[0]}..{self.bounds[1]} workers (autoscaled)"
        return f"{self.workers} worker{'s' if self.workers != 1 else ''}"

    @property
    def origin(self) -> str:
        """Where the stage class comes from, for a one-line caption."""
        if self.distribution:
            dist = f"{self.distribution} {self.version}" if self.version else self.distribution
            return f"{dist} (plugin {self.plugin})" if self.plugin else dist
        if self.plugin:
            return f"plugin {self.plugin}"
        return "local class"


@dataclass(frozen=True)
class Problem:
    """One reason the upstream Output does not satisfy the downstream Input.

    ``field`` is the dotted path in the downstream Input; ``needed`` and ``provided`` are
    readable type names, ``provided`` None when the upstream Output lacks the field.
    """

    field: str
    kind: Literal["missing", "incompatible"]
    message: str
    needed: str = ""
    provided: str | None = None

    @property
    def marker(self) -> str:
        """The short mark drawn on the edge, e.g. ``✗ mismatch: missing 'tokens'``."""
        if self.kind == "incompatible" and self.provided and self.needed:
            return f"✗ mismatch: incompatible {self.field!r} ({self.provided}, needs {self.needed})"
        return f"✗ mismatch: {self.kind} {self.field!r}"


@dataclass(frozen=True)
class Edge:
    """The link from stage ``source`` to stage ``target`` (indexes into ``Graph.stages``)."""

    source: int
    target: int
    model: ModelRef
    expects: ModelRef
    problems: tuple[Problem, ...]
    fused: bool = False  # both stages run in one process: records are handed over in memory

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def label(self) -> str:
        """The model that flows along the edge, and the one it is read as when they differ."""
        if self.model.id == self.expects.id:
            return self.model.name
        return f"{self.model.name} as {self.expects.name}"


@dataclass(frozen=True)
class Graph:
    """A pipeline as a chain of stages joined by edges that carry models."""

    name: str
    source: str | None
    stages: tuple[StageNode, ...]
    edges: tuple[Edge, ...]
    #: A run's numbers to draw on the graph (``stageflow graph --report``), or None.
    overlay: Overlay | None = None

    @property
    def input(self) -> ModelRef:
        """The model records enter the pipeline as: the first stage's Input."""
        return self.stages[0].input

    @property
    def output(self) -> ModelRef:
        """The model records leave the pipeline as: the last stage's Output."""
        return self.stages[-1].output

    @property
    def problems(self) -> tuple[Problem, ...]:
        return tuple(problem for edge in self.edges for problem in edge.problems)

    def models(self) -> dict[str, ModelRef]:
        """Every model the graph mentions, by id, in pipeline order."""
        found: dict[str, ModelRef] = {}
        for stage in self.stages:
            for ref in (stage.input, stage.output, stage.config):
                if ref is not None:
                    found.setdefault(ref.id, ref)
        return found


def build_graph(pipeline: Pipeline) -> Graph:
    """Reduce ``pipeline`` to a :class:`Graph`; build it with ``check_schemas=False``."""
    refs = _ModelRefs()
    plan = pipeline.plan()
    fused = [unit for unit in plan.units if unit.fused]
    groups = {
        unit.first + offset: (number, unit.workers)
        for number, unit in enumerate(fused, start=1)
        for offset in range(len(unit.stages))
    }
    stages = tuple(
        _stage_node(index, bound, refs, groups.get(index))
        for index, bound in enumerate(pipeline.stages)
    )
    by_pair: dict[tuple[str, str], list[Mismatch]] = {}
    for mismatch in pipeline.mismatches:
        by_pair.setdefault((mismatch.upstream, mismatch.downstream), []).append(mismatch)
    edges = []
    for (index, up), down in zip(enumerate(pipeline.stages), pipeline.stages[1:], strict=False):
        problems = tuple(_problem(mismatch) for mismatch in by_pair.get((up.name, down.name), []))
        edges.append(
            Edge(
                index,
                index + 1,
                stages[index].output,
                stages[index + 1].input,
                problems,
                fused=plan.boundaries[index] is None,
            )
        )
    return Graph(pipeline.name, pipeline.source, stages, tuple(edges))


def visible(text: str) -> str:
    """Return ``text`` with control and bidi-override characters shown as escapes.

    Names come from pipeline files and plugins; a newline would break a drawing's layout,
    and an escape sequence or a right-to-left override could rewrite what a terminal or a
    reviewer sees, so every renderer prints names through this.
    """
    out = []
    for char in text:
        if char in _NAMED_ESCAPES:
            out.append(_NAMED_ESCAPES[char])
        elif unicodedata.category(char) == "Cc" or char in _BIDI_CONTROLS:
            code = ord(char)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
        else:
            out.append(char)
    return "".join(out)


_NAMED_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_BIDI_CONTROLS = frozenset("\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


class _ModelRefs:
    """Makes one :class:`ModelRef` per model class, with ids unique within the graph."""

    def __init__(self) -> None:
        self._by_class: dict[type[BaseModel], ModelRef] = {}
        self._ids: set[str] = set()

    def __call__(self, model: type[BaseModel]) -> ModelRef:
        if model in self._by_class:
            return self._by_class[model]
        base = f"{model.__module__}:{model.__qualname__}"
        ref_id, n = base, 1
        # Models made at runtime (create_model, factories) can share a qualified name.
        while ref_id in self._ids:
            n += 1
            ref_id = f"{base}#{n}"
        self._ids.add(ref_id)
        try:
            ref = ModelRef(ref_id, model.__name__, model.model_json_schema())
        except PydanticUserError as exc:
            ref = ModelRef(ref_id, model.__name__, None, str(exc).splitlines()[0])
        self._by_class[model] = ref
        return ref


def _stage_node(
    index: int, bound: BoundStage, refs: _ModelRefs, group: tuple[int, int] | None
) -> StageNode:
    cls = bound.cls
    config = bound.config.model_dump(mode="json") if bound.config is not None else None
    return StageNode(
        index=index,
        name=bound.name,
        uses=bound.spec.uses,
        reference=bound.entry.reference,
        workers=bound.workers,
        plugin=bound.entry.plugin,
        distribution=bound.entry.distribution,
        version=bound.entry.version,
        input=refs(cls.Input),
        output=refs(cls.Output),
        config=refs(cls.Config) if cls.Config is not None else None,
        config_values=config,
        fused_group=group[0] if group else None,
        group_workers=group[1] if group else 0,
        bounds=(bound.bounds.min, bound.bounds.max) if bound.bounds is not None else None,
    )


def _problem(mismatch: Mismatch) -> Problem:
    kind: Literal["missing", "incompatible"] = (
        "missing" if mismatch.provided is None else "incompatible"
    )
    return Problem(mismatch.field, kind, mismatch.message, mismatch.needed, mismatch.provided)
