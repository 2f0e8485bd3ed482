"""Checking a stage class against the stage contract, before any record runs through it."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from stageflow.compat import check_edge
from stageflow.errors import PluginError
from stageflow.schema import stage_schemas
from stageflow.stage import Stage

__all__ = ["StageContract", "check_stage"]


@dataclass(frozen=True)
class StageContract:
    """What :func:`check_stage` found in a stage that keeps the contract.

    ``schemas`` are the stage's JSON Schemas (``input``, ``output`` and maybe ``config``);
    ``required_config`` names the Config fields a pipeline file must set.
    """

    stage: type[Stage]
    schemas: dict[str, dict[str, Any]]
    required_config: tuple[str, ...] = field(default=())


def check_stage(
    stage: type[Stage], *, feeds: type[Stage] | Iterable[type[Stage]] = ()
) -> StageContract:
    """Check ``stage`` against the contract; raise :class:`~stageflow.errors.PluginError` if not.

    Checked, with every problem named in the one error:

    * the class definition, as the plugin loader checks it (``name``, ``Input``, ``Output``,
      ``Config``, ``process()``);
    * that every Config field without a default says, in its ``description``, what to set,
      since a pipeline file must then give it;
    * that Input, Output and Config produce JSON Schemas (``stageflow schema``, editors and
      ``stageflow plugins --json`` need them);
    * that Input and Output read back the JSON they write: a field with an alias must be
      written under it (``serialize_by_alias``) or be read by name (``validate_by_name``),
      since records travel between stages, and back to the caller, as that JSON;
    * that the stage's Output can feed each stage in ``feeds``, by the engine's own check
      (the one ``stageflow validate`` runs between consecutive stages).
    """
    if not (isinstance(stage, type) and issubclass(stage, Stage)):
        raise PluginError(f"{stage!r} is not a stageflow.Stage subclass; subclass stageflow.Stage")
    stage.check_definition()
    problems: list[str] = []
    required = _required_fields(stage.Config)
    for name in required:
        config = stage.Config
        assert config is not None  # a required field implies a Config model
        if not config.model_fields[name].description:
            problems.append(
                f"Config field {name!r} has no default and no description; give it a default "
                f"or Field(description=...) saying what a pipeline file must set"
            )
    for kind in ("Input", "Output"):
        problems += _alias_problems(kind, getattr(stage, kind))
    schemas: dict[str, dict[str, Any]] = {}
    try:
        schemas = stage_schemas(stage)
    except Exception as exc:  # noqa: BLE001 - any failure to build a schema is the finding
        problems.append(
            f"its models do not produce JSON Schemas ({type(exc).__name__}: {exc}); use "
            "field types pydantic can describe, or annotate them with WithJsonSchema"
        )
    downstream = (feeds,) if isinstance(feeds, type) else tuple(feeds)
    for target in downstream:
        target.check_definition()
        problems += (
            str(m) for m in check_edge(stage.name, stage.Output, target.name, target.Input)
        )
    if problems:
        raise PluginError(f"stage {stage.name!r} breaks the stage contract: " + "; ".join(problems))
    return StageContract(stage, schemas, required)


def _required_fields(config: type[BaseModel] | None) -> tuple[str, ...]:
    if config is None:
        return ()
    return tuple(name for name, info in config.model_fields.items() if info.is_required())


def _alias_problems(kind: str, model: type[BaseModel]) -> list[str]:
    config = model.model_config
    if config.get("serialize_by_alias") or config.get("validate_by_name"):
        return []
    if config.get("populate_by_name"):
        return []
    return [
        f"{kind} {model.__name__} writes field {name!r} under that name but reads it only as "
        f"{info.alias!r}, so its own JSON does not validate; set serialize_by_alias=True or "
        "validate_by_name=True in its model_config"
        for name, info in model.model_fields.items()
        if isinstance(info.alias, str) and info.alias != name
    ]
