"""Pipeline definitions: plain data, validated eagerly, before anything runs.

A pipeline is a named chain of stages. :class:`Pipeline` resolves every stage against the
installed plugins, validates every ``config:`` block and checks that each stage's Output
can satisfy the next stage's Input, all in its constructor. Running it is the engine's job
(:mod:`stageflow.engine`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, get_args

import yaml
from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from stageflow.compat import Mismatch, check_edge, describe
from stageflow.engine import shipping
from stageflow.errors import PipelineError, SchemaMismatchError, StageConfigError
from stageflow.plan import FusionPlan, keeps_state, plan_fusion
from stageflow.plugins import StageEntry, StageRegistry, did_you_mean, load_registry
from stageflow.stage import Stage

if TYPE_CHECKING:
    from stageflow.engine.run import Run

__all__ = ["MAX_WORKERS", "BoundStage", "Pipeline", "PipelineSpec", "StageSpec", "WorkerBounds"]

#: The most worker processes one stage may ask for, fixed or as an autoscaler's ``max``.
MAX_WORKERS = 256


class WorkerBounds(BaseModel):
    """A stage's `workers: {min: 1, max: 8}`: the autoscaler keeps it within these bounds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # The bounds are checked in _in_order, for one sentence each; the schema has them too.
    min: int = Field(
        description="The fewest worker processes; at least 1.", json_schema_extra={"minimum": 1}
    )
    max: int = Field(
        description=f"The most worker processes; at most {MAX_WORKERS}.",
        json_schema_extra={"minimum": 1, "maximum": MAX_WORKERS},
    )
    initial: int | None = Field(
        default=None,
        description="Worker processes at the start, within min..max; default min.",
    )

    @model_validator(mode="after")
    def _in_order(self) -> WorkerBounds:
        if self.min < 1:
            raise ValueError(
                f"an autoscaled stage needs min at least 1, not {self.min} "
                "(for a stage served only by joined workers write `workers: 0`)"
            )
        if self.min > self.max:
            raise ValueError(f"min {self.min} is more than max {self.max}")
        if self.max > MAX_WORKERS:
            raise ValueError(f"max {self.max} is above the cap of {MAX_WORKERS} workers per stage")
        if self.initial is not None and not self.min <= self.initial <= self.max:
            raise ValueError(f"initial {self.initial} is outside min..max ({self})")
        return self

    @property
    def start(self) -> int:
        """How many workers the stage starts with."""
        return self.min if self.initial is None else self.initial

    def __str__(self) -> str:
        return f"{self.min}..{self.max}"


_FIXED_WORKERS: TypeAdapter[int] = TypeAdapter(Annotated[int, Field(ge=0, le=MAX_WORKERS)])


class StageSpec(BaseModel):
    """One stage of a pipeline file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, description="Unique name of this stage within the pipeline.")
    uses: str = Field(
        min_length=1,
        description='A registered stage name, or "package.module:Class".',
    )
    workers: Annotated[int, Field(ge=0, le=MAX_WORKERS)] | WorkerBounds = Field(
        default=1,
        description="Worker processes for this stage; 0: served only by workers that join "
        "from other hosts (stageflow worker --join); {min, max}: as many as the autoscaler "
        "decides within those bounds.",
    )
    config: dict[str, Any] = Field(
        default_factory=dict, description="Validated by the stage's Config model."
    )
    retries: int = Field(
        default=2, ge=0, description="Extra attempts when process() raises, before dead-lettering."
    )
    timeout: float | None = Field(
        default=None,
        gt=0,
        description="Seconds one process() call may take before its record is dead-lettered.",
    )
    key: str | None = Field(
        default=None,
        min_length=1,
        description="A field of the stage's Input (dotted for a nested one): records with the "
        "same value always go to the same worker of the stage.",
    )
    stateful: bool = Field(
        default=False,
        description="The stage keeps state across records (implied when it overrides finish()).",
    )
    fuse: bool = Field(
        default=True,
        description="false runs this stage in processes of its own, never fused with a "
        "neighbour into one worker process.",
    )

    @field_validator("workers", mode="before")
    @classmethod
    def _one_reason(cls, value: Any) -> Any:
        """Say what is wrong with ``workers`` once, not once per member of the union."""
        try:
            if isinstance(value, Mapping):
                return WorkerBounds.model_validate(value)
            return _FIXED_WORKERS.validate_python(value)
        except ValidationError as exc:
            first = exc.errors()[0]
            if first["type"] in ("int_type", "int_parsing", "int_from_float"):
                raise ValueError(
                    f"{value!r} is not a number of workers; write a whole number, "
                    "or {min: N, max: M} to autoscale"
                ) from None
            where = ".".join(str(part) for part in first["loc"])
            if first["type"] == "missing":
                raise ValueError(f"{{min, max}} needs {where} too") from None
            if first["type"] == "extra_forbidden":
                known = list(WorkerBounds.model_fields)
                raise ValueError(
                    f"unknown key {where!r} in {{min, max}}; {did_you_mean(where, known)}"
                    f"the known keys are {', '.join(known)}"
                ) from None
            message = first["msg"].removeprefix("Value error, ")
            raise ValueError(f"{where}: {message}" if where else message) from None


class PipelineSpec(BaseModel):
    """A pipeline file: a name and the stages in the order records flow through them."""

    model_config = ConfigDict(extra="forbid", frozen=True, title="stageflow pipeline")

    name: str = Field(min_length=1, description="The pipeline's name.")
    stages: tuple[StageSpec, ...] = Field(min_length=1, description="Stages in flow order.")

    @field_validator("stages")
    @classmethod
    def _unique_names(cls, stages: tuple[StageSpec, ...]) -> tuple[StageSpec, ...]:
        seen: set[str] = set()
        for stage in stages:
            if stage.name in seen:
                raise ValueError(
                    f"stage name {stage.name!r} is used twice, but names must be unique"
                )
            seen.add(stage.name)
        return stages


@dataclass(frozen=True)
class BoundStage:
    """A stage spec resolved to its class, with its validated config."""

    spec: StageSpec
    entry: StageEntry
    config: BaseModel | None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def cls(self) -> type[Stage]:
        return self.entry.cls

    @property
    def workers(self) -> int:
        """How many workers the stage starts with."""
        workers = self.spec.workers
        return workers.start if isinstance(workers, WorkerBounds) else workers

    @property
    def bounds(self) -> WorkerBounds | None:
        """The autoscaler's bounds, or None for a stage with a fixed number of workers."""
        workers = self.spec.workers
        return workers if isinstance(workers, WorkerBounds) else None

    @property
    def stateful(self) -> bool:
        """Whether a worker's state matters beyond one record (``stateful:`` or a finish())."""
        return self.spec.stateful or keeps_state(self.cls)

    @property
    def snapshots(self) -> bool:
        """Whether the stage is stateful and its state can be snapshotted and restored."""
        return self.stateful and self.cls.has_snapshots()

    @property
    def key(self) -> tuple[str, ...] | None:
        """The key's dotted path as parts, or None for a stage that is not keyed."""
        return tuple(self.spec.key.split(".")) if self.spec.key else None

    def config_json(self) -> str:
        return self.config.model_dump_json() if self.config is not None else "null"


StageLike = StageSpec | Mapping[str, Any]


class Pipeline:
    """A validated pipeline, ready to run.

    Build one from a file with :meth:`from_file`, from a mapping with :meth:`from_dict`, or
    from Python objects::

        Pipeline("counts", [{"name": "count", "uses": WordCount, "workers": 2}])

    where ``uses`` may be a :class:`Stage` subclass. Every check runs here; an invalid
    pipeline raises a :class:`~stageflow.errors.PipelineError` subclass. With
    ``check_schemas=False`` an Output→Input mismatch is kept in :attr:`mismatches` instead
    of raised, so that tools such as ``stageflow graph`` can still draw the pipeline.
    """

    def __init__(
        self,
        name: str,
        stages: Sequence[StageLike],
        *,
        registry: StageRegistry | None = None,
        source: str | None = None,
        check_schemas: bool = True,
    ) -> None:
        classes: dict[str, type[Stage]] = {}
        raw: list[Any] = []
        for stage in stages:
            if isinstance(stage, Mapping) and isinstance(stage.get("uses"), type):
                cls = stage["uses"]
                if not issubclass(cls, Stage):
                    raise PipelineError(
                        f"{cls!r} given as `uses` is not a stageflow.Stage subclass"
                    )
                cls.check_definition()
                reference = f"{cls.__module__}:{cls.__qualname__}"
                classes[reference] = cls
                stage = {**stage, "uses": reference}
            raw.append(stage)
        self.source = source
        self.spec = _validate_spec({"name": name, "stages": raw}, source)
        if registry is None and any(":" not in s.uses for s in self.spec.stages):
            registry = load_registry()
        self.registry = registry or StageRegistry()
        self.stages: tuple[BoundStage, ...] = tuple(
            self._bind(spec, classes) for spec in self.spec.stages
        )
        for bound in self.stages:
            _check_key(bound)
            _check_bounds(bound)
        self.mismatches: tuple[Mismatch, ...] = tuple(
            mismatch
            for upstream, downstream in zip(self.stages, self.stages[1:], strict=False)
            for mismatch in check_edge(
                upstream.name, upstream.cls.Output, downstream.name, downstream.cls.Input
            )
        )
        if check_schemas and self.mismatches:
            raise SchemaMismatchError(describe(self.mismatches))

    @property
    def name(self) -> str:
        return self.spec.name

    @classmethod
    def from_dict(
        cls,
        data: Any,
        *,
        registry: StageRegistry | None = None,
        source: str | None = None,
        check_schemas: bool = True,
    ) -> Pipeline:
        """Build a pipeline from the parsed content of a pipeline file."""
        spec = _validate_spec(data, source)
        return cls(
            spec.name,
            list(spec.stages),
            registry=registry,
            source=source,
            check_schemas=check_schemas,
        )

    @classmethod
    def from_file(
        cls,
        path: str | os.PathLike[str],
        *,
        registry: StageRegistry | None = None,
        check_schemas: bool = True,
    ) -> Pipeline:
        """Read and validate a YAML pipeline file."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise PipelineError(
                f"cannot read pipeline file {str(path)!r}: {exc.strerror or exc}; check the path"
            ) from exc
        except UnicodeDecodeError as exc:
            raise PipelineError(
                f"pipeline file {str(path)!r} is not UTF-8 text; save it as UTF-8 YAML"
            ) from exc
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark is not None else ""
            problem = getattr(exc, "problem", None) or str(exc)
            raise PipelineError(
                f"pipeline file {str(path)!r} is not valid YAML{where}: {problem}; fix the syntax"
            ) from exc
        return cls.from_dict(data, registry=registry, source=str(path), check_schemas=check_schemas)

    def _bind(self, spec: StageSpec, classes: Mapping[str, type[Stage]]) -> BoundStage:
        if spec.uses in classes:
            entry = StageEntry(classes[spec.uses])
        else:
            entry = self.registry.resolve(spec.uses)
        config: BaseModel | None = None
        config_model = entry.cls.Config
        if config_model is not None:
            _check_config_keys(spec, config_model)
            try:
                config = config_model.model_validate(spec.config)
            except ValidationError as exc:
                first = exc.errors()[0]
                field = ".".join(str(p) for p in first["loc"]) or "(the whole block)"
                raise StageConfigError(
                    f"stage {spec.name!r} ({spec.uses}): config field {field!r}: {first['msg']}; "
                    f"fix the stage's `config:` block"
                ) from exc
        elif spec.config:
            raise StageConfigError(
                f"stage {spec.name!r} ({spec.uses}) takes no configuration but `config:` sets "
                f"{', '.join(sorted(spec.config))}; remove the `config:` block"
            )
        return BoundStage(spec, entry, config)

    def check_runnable(self) -> None:
        """Raise PipelineError if a worker process could not get one of the stage classes."""
        for stage in self.stages:
            _check_importable(stage.cls)

    def plan(self, *, fuse: bool = True) -> FusionPlan:
        """Which stages share worker processes (:mod:`stageflow.plan` has the rules)."""
        return plan_fusion(self.stages, fuse=fuse)

    def run(self, items: Iterable[Any], **options: Any) -> Run:
        """Run the pipeline over ``items`` and iterate over the last stage's Outputs.

        ``items`` are dicts, Input models of the first stage, or JSON ``bytes``/``str``;
        ``fuse=False`` runs every stage in processes of its own.
        See :class:`stageflow.engine.run.Run` for the options and the report.
        """
        from stageflow.engine.run import Run

        return Run(self, items, **options)

    def __repr__(self) -> str:
        chain = " -> ".join(f"{s.name}[{s.spec.uses}x{s.spec.workers}]" for s in self.stages)
        return f"<Pipeline {self.name!r}: {chain}>"


def _check_config_keys(spec: StageSpec, model: type[BaseModel]) -> None:
    """Refuse `config:` keys the stage's Config does not know: a typo must not mean a default.

    pydantic ignores unknown keys unless a model says otherwise; a Config that declares
    ``extra="allow"`` accepts any key, and one with ``extra="forbid"`` gets this message
    rather than pydantic's.
    """
    if model.model_config.get("extra") == "allow":
        return
    names = list(model.model_fields)
    accepted = set(names)
    for info in model.model_fields.values():
        alias = info.validation_alias if info.validation_alias is not None else info.alias
        choices = alias.choices if isinstance(alias, AliasChoices) else [alias]
        accepted.update(choice for choice in choices if isinstance(choice, str))
    unknown = [key for key in spec.config if key not in accepted]
    if not unknown:
        return
    described = ", ".join(
        f"{key!r} ({hint.strip()})" if (hint := did_you_mean(key, accepted)) else repr(key)
        for key in unknown
    )
    noun = "key" if len(unknown) == 1 else "keys"
    raise StageConfigError(
        f"stage {spec.name!r} ({spec.uses}): unknown config {noun} {described}; the known keys "
        f"are {', '.join(names) or '(none)'}; fix the stage's `config:` block"
    )


def _validate_spec(data: Any, source: str | None) -> PipelineSpec:
    where = f"pipeline file {source!r}" if source else "pipeline definition"
    if not isinstance(data, Mapping):
        raise PipelineError(
            f"{where} must be a mapping with `name:` and `stages:`; "
            f"found {type(data).__name__}"
        )
    try:
        return PipelineSpec.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        # A misspelt key also makes the key it meant missing: name the typo, not the gap.
        first = next((error for error in errors if _misspelt(error)), errors[0])
        loc = ".".join(str(p) for p in first["loc"]) or "(top level)"
        stage = _stage_name_at(data, first["loc"])
        if stage is not None:
            loc += f" (stage {stage!r})"
        message = _message_for(first)
        fix = "fix the file (`stageflow schema` prints its format)" if source else "fix it"
        raise PipelineError(f"{where}: {loc}: {message}; {fix}") from exc


def _known_keys(loc: tuple[int | str, ...]) -> list[str]:
    """The keys the mapping at an error location may have: a stage's or the file's."""
    model = StageSpec if len(loc) == 3 and loc[0] == "stages" else PipelineSpec
    return list(model.model_fields)


def _misspelt(error: Any) -> bool:
    loc = error["loc"]
    return bool(
        error["type"] == "extra_forbidden" and loc and did_you_mean(str(loc[-1]), _known_keys(loc))
    )


def _message_for(error: Any) -> str:
    """pydantic's message for one error, in the words of a pipeline file where it can be."""
    loc = error["loc"]
    if error["type"] == "extra_forbidden" and loc:
        key, known = str(loc[-1]), _known_keys(loc)
        hint = did_you_mean(key, known)
        return f"unknown key {key!r}; {hint}the known keys are {', '.join(known)}"
    if error["type"] == "too_short" and tuple(loc) == ("stages",):
        return "a pipeline needs at least one stage"
    return str(error["msg"]).removeprefix("Value error, ")


def _stage_name_at(data: Mapping[str, Any], loc: tuple[int | str, ...]) -> str | None:
    """The name of the stage an error location such as ``stages.0.workers`` points into."""
    if len(loc) < 2 or loc[0] != "stages" or not isinstance(loc[1], int):
        return None
    stages = data.get("stages")
    if not isinstance(stages, Sequence) or not 0 <= loc[1] < len(stages):
        return None
    stage = stages[loc[1]]
    name = stage.get("name") if isinstance(stage, Mapping) else None
    return name if isinstance(name, str) else None


def _check_key(stage: BoundStage) -> None:
    """A stage's ``key:`` must name a field of its Input, through nested models."""
    if stage.key is None:
        return
    model: Any = stage.cls.Input
    for depth, part in enumerate(stage.key):
        fields = getattr(model, "model_fields", None)
        if fields is None:
            inside = ".".join(stage.key[:depth])
            raise PipelineError(
                f"stage {stage.name!r}: key {stage.spec.key!r}: {inside!r} is not a model, so "
                f"it has no field {part!r}; fix `key:`"
            )
        if part not in fields:
            raise PipelineError(
                f"stage {stage.name!r}: key {stage.spec.key!r}: {model.__name__} has no field "
                f"{part!r} (its fields: {', '.join(fields)}); fix `key:`"
            )
        model = _model_in(fields[part].annotation)


def _check_bounds(stage: BoundStage) -> None:
    """Refuse to autoscale a stage whose worker count is part of its meaning."""
    if stage.bounds is None:
        return
    if stage.key is not None:
        raise PipelineError(
            f"stage {stage.name!r} is keyed by {stage.spec.key!r}, so its worker count is fixed "
            f"by its key slots and cannot autoscale; give it a fixed `workers: N`"
        )
    if stage.stateful:
        raise PipelineError(
            f"stage {stage.name!r} keeps state (finish() or `stateful`), so each of its "
            "workers holds a part of it and it cannot autoscale; give it a fixed `workers: N`"
        )


def _model_in(annotation: Any) -> Any:
    """The model an annotation such as ``User`` or ``User | None`` names, else itself."""
    for candidate in (annotation, *get_args(annotation)):
        if hasattr(candidate, "model_fields"):
            return candidate
    return annotation


def _check_importable(cls: type[Stage]) -> None:
    """Worker processes import stage classes, or receive them by value when they cannot."""
    if not shipping.by_value(cls):
        return
    try:
        shipping.stage_settings(cls)
    except Exception as exc:
        raise PipelineError(
            f"stage class {cls.__qualname__} is defined in {cls.__module__} (a script, notebook "
            f"or function), so it is sent to the workers by value, and cloudpickle cannot "
            f"pickle it: {type(exc).__name__}: {exc}; move what it holds into setup() or the "
            "class into a module"
        ) from exc
