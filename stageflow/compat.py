"""Static compatibility of one stage's Output with the next stage's Input."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel

__all__ = ["Mismatch", "check_edge"]


@dataclass(frozen=True)
class Mismatch:
    """One Input field of ``downstream`` that ``upstream``'s Output cannot satisfy."""

    upstream: str
    downstream: str
    field: str
    message: str

    def __str__(self) -> str:
        return self.message


def check_edge(
    upstream: str, output: type[BaseModel], downstream: str, input_: type[BaseModel]
) -> list[Mismatch]:
    """Return one :class:`Mismatch` per Input field the upstream Output cannot provide."""
    problems = []
    provided = output.model_fields
    for field_name, field in input_.model_fields.items():
        if field.is_required() and field_name not in provided:
            problems.append(
                Mismatch(
                    upstream,
                    downstream,
                    field_name,
                    f"{upstream} → {downstream}: {downstream} needs field {field_name!r} "
                    f"({_type_name(field.annotation)}) that {upstream}'s output "
                    f"{output.__name__} does not provide",
                )
            )
    return problems


def _type_name(annotation: object) -> str:
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")
