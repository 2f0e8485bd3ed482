"""Keyed routing: which worker slot of a keyed stage a record belongs to.

A stage with ``key: FIELD`` has a fixed number of worker slots for the whole run (its
``workers:``). A record goes to slot ``BLAKE2b-64(canonical JSON of the key's value) mod
slots``: the canonical JSON is ``json.dumps(value, sort_keys=True, separators=(",", ":"),
ensure_ascii=False)`` in UTF-8, the digest an unkeyed 8-byte BLAKE2b read as a little-endian
integer. So the same key lands on the same slot in every run and on every machine, and a
replacement worker takes over its slot's keys. A record whose key is missing (or that is not
JSON) counts as the value ``null``: it still goes somewhere fixed, and the worker reports
what is wrong with it.

Only keyed stages pay for this: their records are parsed once in the coordinator.
"""

from __future__ import annotations

import json
from hashlib import blake2b
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from stageflow.pipeline import BoundStage

__all__ = ["check_scalable", "key_value", "slot_of"]


def key_value(record: bytes, path: tuple[str, ...]) -> Any:
    """The value at ``path`` inside a JSON record; None when it is missing or unparsable."""
    try:
        value: Any = json.loads(record)
    except ValueError:
        return None
    for part in path:
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def slot_of(record: bytes, path: tuple[str, ...], slots: int) -> int:
    """The worker slot, out of ``slots``, of the record's key."""
    canonical = json.dumps(
        key_value(record, path), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    digest = blake2b(canonical.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") % slots


def check_scalable(stage: BoundStage) -> None:
    """Refuse to scale a keyed stage: its keys are spread over a fixed number of slots."""
    if stage.key is not None:
        raise ValueError(
            f"stage {stage.name!r} is keyed by {stage.spec.key!r}: its {stage.workers} worker "
            "slots are fixed for the run, since each key belongs to one of them"
        )
