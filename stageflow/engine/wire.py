"""The frame format records travel in between the coordinator and the workers.

A data frame is two ZeroMQ message parts::

    header  JSON object {"v": 1, "ids": [root, attempt, tag, root, attempt, tag, ...]}
    body    one JSON document per record, joined by b"\\n"
    digest  see below

``root`` is the sequence number of the input record this record descends from (for the CLI,
its line number), ``attempt`` counts how often that input has been (re)delivered, and
``tag`` is a random 63-bit number naming this very record for acknowledgement (see
:mod:`stageflow.engine.tracker`). Compact JSON never holds a raw newline, so splitting the
body on b"\\n" recovers the records. Nothing on the wire is ever unpickled.

Control messages (worker to coordinator) are a JSON object with a ``"t"`` kind, optionally
followed by a body part of records.

Every message ends with a third part: a keyed BLAKE2b digest of the parts before it, under a
random key each run hands its workers through their private stdin. A frame from anything
else that reaches a port (a stray client, a leftover from another run, a forged peer) is
rejected before it is parsed.
"""

from __future__ import annotations

import hmac
import json
import os
from collections.abc import Sequence
from hashlib import blake2b
from typing import Any

__all__ = [
    "VERSION",
    "WireError",
    "decode_batch",
    "decode_control",
    "encode_batch",
    "encode_control",
    "new_key",
    "sign",
]

VERSION = 1
_IDS_PER_RECORD = 3
_DIGEST_SIZE = 16


def new_key() -> bytes:
    """A fresh signing key for one run."""
    return os.urandom(32)


def _digest(parts: Sequence[bytes], key: bytes) -> bytes:
    mac = blake2b(key=key, digest_size=_DIGEST_SIZE)
    for part in parts:
        mac.update(len(part).to_bytes(8, "little"))  # so parts cannot be re-split
        mac.update(part)
    return mac.digest()


def sign(parts: list[bytes], key: bytes) -> list[bytes]:
    """Append the digest part to ``parts`` (in place) and return them."""
    parts.append(_digest(parts, key))
    return parts


def _verify(parts: Sequence[bytes], key: bytes) -> Sequence[bytes]:
    if len(parts) < 2 or not hmac.compare_digest(parts[-1], _digest(parts[:-1], key)):
        raise WireError("frame is not signed with this run's key (a stray or forged sender)")
    return parts[:-1]


class WireError(ValueError):
    """Raised when a frame from a peer is malformed; the receiver logs and drops it."""


def encode_batch(ids: Sequence[int], records: Sequence[bytes], key: bytes) -> list[bytes]:
    """Build the signed message parts of a data frame."""
    header = json.dumps({"v": VERSION, "ids": ids}, separators=(",", ":")).encode()
    return sign([header, b"\n".join(records)], key)


def decode_batch(parts: Sequence[bytes], key: bytes) -> tuple[list[int], list[bytes]]:
    """Split a data frame into its flat id list and its records; raise WireError if malformed."""
    parts = _verify(parts, key)
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


def decode_control(parts: Sequence[bytes], key: bytes) -> tuple[dict[str, Any], bytes | None]:
    """Parse a control message and its optional body; raise WireError if malformed."""
    parts = _verify(parts, key)
    if len(parts) > 2:
        raise WireError(f"a control message has 1 or 2 parts, this one has {len(parts)}")
    try:
        message = json.loads(parts[0])
    except (ValueError, UnicodeDecodeError) as exc:
        raise WireError(f"control message is not JSON: {exc}") from None
    if not isinstance(message, dict) or not isinstance(message.get("t"), str):
        raise WireError("control message has no kind")
    return message, (parts[1] if len(parts) == 2 else None)


def encode_control(message: dict[str, Any], key: bytes, body: bytes | None = None) -> list[bytes]:
    parts = [json.dumps(message, separators=(",", ":")).encode()]
    if body is not None:
        parts.append(body)
    return sign(parts, key)
