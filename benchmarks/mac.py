"""What signing every byte of a frame costs: wire format 4 against formats 3 and 2.

    python benchmarks/mac.py            # 256-record frames of ~200-byte records
    python benchmarks/mac.py --quick    # a smoke check

Format 4 (stageflow/engine/wire.py) signs head and payload with HMAC-SHA256 (16 bytes of
it); format 3 did with keyed BLAKE2b; format 2 signed the head only and checked the payload
by CRC-32, which anyone can forge. Each column times the signing and the check of the same
frame, per record, in one process.
"""

from __future__ import annotations

import argparse
import hmac
import sys
import time
import zlib
from hashlib import blake2b
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from stageflow.engine import wire

RECORD = b'{"id":"rec-00001","mean":0.5123456789,"variance":0.0812345678,"trend":"increasing",' + (
    b'"source":"sensor-a","batch":0,"pad":"' + b"x" * 60 + b'"}'
)


def _v2_checks(head: bytes, payload: bytes, key: bytes) -> None:
    """Format 2's integrity work, sender and receiver: digest of the head, CRC-32 of the payload."""
    for _ in range(2):
        blake2b(head, key=key, digest_size=16).digest()
        zlib.crc32(payload)


def _v3_checks(head: bytes, payload: bytes, key: bytes) -> None:
    """Format 3's, sender and receiver: keyed BLAKE2b over head and payload."""
    for _ in range(2):
        mac = blake2b(key=key, digest_size=16)
        mac.update(head)
        mac.update(payload)
        mac.digest()


def _v4_checks(head: bytes, payload: bytes, key: bytes) -> None:
    """Format 4's, sender and receiver: HMAC-SHA256 over head and payload."""
    for _ in range(2):
        mac = hmac.new(key, digestmod="sha256")
        mac.update(head)
        mac.update(payload)
        mac.digest()


def _codec(head: bytes, payload: bytes, key: bytes) -> None:
    """The whole of encode_batch plus decode_batch in the current format, for scale."""
    ids = wire.unpack_ints(head[8:])
    wire.decode_batch(wire.encode_batch(ids, payload.split(b"\n"), key), key)


def measure(frames: int, records_per_frame: int = 256) -> dict[str, float]:
    """Microseconds per record of each step, best of 3 passes over ``frames`` frames."""
    key = wire.new_key()
    ids = [n for i in range(records_per_frame) for n in (i + 1, 0, 12345 + i)]
    head, payload, _ = wire.encode_batch(ids, [RECORD] * records_per_frame, key)
    out = {"record_bytes": float(len(RECORD)), "frame_records": float(records_per_frame)}
    steps = (("v2", _v2_checks), ("v3", _v3_checks), ("v4", _v4_checks), ("codec", _codec))
    for name, step in steps:
        best = float("inf")
        for _ in range(3):
            began = time.perf_counter()
            for _ in range(frames):
                step(head, payload, key)
            best = min(best, time.perf_counter() - began)
        out[name] = best / (frames * records_per_frame) * 1e6
    return out


def report(result: dict[str, float]) -> str:
    return (
        f"{int(result['frame_records'])}-record frames of {int(result['record_bytes'])}-byte "
        f"records, per record, signing plus checking: format 2 (head digest, payload CRC-32) "
        f"{result['v2']:.3f} µs, format 3 (BLAKE2b over every byte) {result['v3']:.3f} µs, "
        f"format 4 (HMAC-SHA256 over every byte) {result['v4']:.3f} µs; the whole format-4 "
        f"encode and decode {result['codec']:.3f} µs"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few frames only")
    args = parser.parse_args()
    print(report(measure(20 if args.quick else 2000)))


if __name__ == "__main__":
    main()
