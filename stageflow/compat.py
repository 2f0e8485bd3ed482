"""Static compatibility of one stage's Output with the next stage's Input."""

from __future__ import annotations

from pydantic import BaseModel

__all__ = ["check_edge"]


def check_edge(
    upstream: str, output: type[BaseModel], downstream: str, input_: type[BaseModel]
) -> list[str]:
    """Return one sentence per Input field the upstream Output cannot provide."""
    problems = []
    provided = output.model_fields
    for field_name, field in input_.model_fields.items():
        if field.is_required() and field_name not in provided:
            problems.append(
                f"{upstream} → {downstream}: {downstream} needs field {field_name!r} "
                f"({_type_name(field.annotation)}) that {upstream}'s output {output.__name__} "
                "does not provide"
            )
    return problems


def _type_name(annotation: object) -> str:
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")
