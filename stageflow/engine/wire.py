"""The frame format records travel in between the coordinator and the workers.

A data frame is two ZeroMQ message parts::

    header  JSON object {"v": 1, "ids": [root, attempt, tag, root, attempt, tag, ...]}
    body    one JSON document per record, joined by b"\\n"

``root`` is the sequence number of the input record this record descends from (for the CLI,
its line number), ``attempt`` counts how often that input has been (re)delivered, and
``tag`` is a random 63-bit number naming this very record for acknowledgement (see
:mod:`stageflow.engine.tracker`). Compact JSON never holds a raw newline, so splitting the
body on b"\\n" recovers the records. Nothing on the wire is ever unpickled.

Control messages (worker to coordinator) are a single JSON object with a ``"t"`` kind.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

__all__ = ["VERSION", "WireError", "decode_batch", "encode_batch", "decode_control"]

VERSION = 1
_IDS_PER_RECORD = 3


class WireError(ValueError):
    """Raised when a frame from a peer is malformed; the receiver logs and drops it."""


def encode_batch(ids: Sequence[int], records: Sequence[bytes]) -> list[bytes]:
    """Build the two message parts of a data frame."""
    header = json.dumps({"v": VERSION, "ids": ids}, separators=(",", ":")).encode()
    return [header, b"\n".join(records)]


def decode_batch(parts: Sequence[bytes]) -> tuple[list[int], list[bytes]]:
    """Split a data frame into its flat id list and its records; raise WireError if malformed."""
    if len(parts) != 2:
        raise WireError(f"a data frame has 2 parts, this one has {len(parts)}")
    header_bytes, body = parts
    try:
        header = json.loads(header_bytes)
    except (ValueError, UnicodeDecodeError) as exc:
        raise WireError(f"frame header is not JSON: {exc}") from None
    if not isinstance(header, dict) or header.get("v") != VERSION:
        version = header.get("v") if isinstance(header, dict) else None
        raise WireError(f"frame header has version {version!r}, expected {VERSION}")
    ids = header.get("ids")
    if not isinstance(ids, list) or len(ids) % _IDS_PER_RECORD:
        raise WireError("frame header has no valid 'ids' list")
    for value in ids:
        if type(value) is not int:
            raise WireError("frame header ids must be integers")
    records = body.split(b"\n") if ids else []
    if len(records) * _IDS_PER_RECORD != len(ids):
        raise WireError(
            f"frame carries {len(records)} records but {len(ids) // _IDS_PER_RECORD} ids"
        )
    return ids, records


def decode_control(raw: bytes) -> dict[str, Any]:
    """Parse a control message; raise WireError if it is not a JSON object with a kind."""
    try:
        message = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise WireError(f"control message is not JSON: {exc}") from None
    if not isinstance(message, dict) or not isinstance(message.get("t"), str):
        raise WireError("control message has no kind")
    return message


def encode_control(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode()
