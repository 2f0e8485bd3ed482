"""The engine's pieces that need no process: wire format, tracker and stage runner."""

from __future__ import annotations

import json
import logging
import struct
import zlib

import pytest
from pydantic import BaseModel, field_validator

from stageflow.engine import wire
from stageflow.engine.runner import CurrentRecord, Pending, StageRunner
from stageflow.engine.tracker import Tracker
from tests.engine.stages import CountWords, FanOut, Line, Split, SplitConfig

KEY = wire.new_key()


def test_batch_round_trip() -> None:
    """A frame carries its ids and records unchanged, newlines separating records."""
    ids = [1, 0, 11, 2, 0, 22]
    parts = wire.encode_batch(ids, [b'{"a":1}', b'{"b":"x y"}'], KEY)
    assert wire.decode_batch(parts, KEY) == (ids, [b'{"a":1}', b'{"b":"x y"}'])


def test_frames_of_another_key_are_rejected() -> None:
    """A frame signed with another run's key, or tampered with, never gets parsed."""
    parts = wire.encode_batch([1, 0, 11], [b"{}"], wire.new_key())
    with pytest.raises(wire.WireError, match="not signed"):
        wire.decode_batch(parts, KEY)
    good = wire.encode_batch([1, 0, 11], [b"{}"], KEY)
    with pytest.raises(wire.WireError, match="not signed"):
        wire.decode_batch([good[0], b'{"x":1}', good[2]], KEY)


def _same_crc(payload: bytes, change: int) -> bytes:
    """A payload differing at byte ``change`` with the same length and CRC-32 as ``payload``.

    CRC-32 is affine over GF(2): flipping a set of bits changes the CRC by the XOR of each
    bit's own effect, so solving for 32 bits in the last 4 bytes restores the CRC.
    """
    zeros = bytes(len(payload))

    def effect(bit: int) -> int:
        flipped = bytearray(zeros)
        flipped[len(payload) - 4 + bit // 8] ^= 1 << (bit % 8)
        return zlib.crc32(flipped) ^ zlib.crc32(zeros)

    forged = bytearray(payload)
    forged[change] ^= 0x20
    basis: dict[int, tuple[int, int]] = {}  # highest bit -> (effect, bits flipped)
    for bit in range(32):
        value, mask = effect(bit), 1 << bit
        while value:
            top = value.bit_length() - 1
            if top not in basis:
                basis[top] = (value, mask)
                break
            value, mask = value ^ basis[top][0], mask ^ basis[top][1]
    need, flips = zlib.crc32(forged) ^ zlib.crc32(payload), 0
    while need:
        value, mask = basis[need.bit_length() - 1]
        need, flips = need ^ value, flips ^ mask
    for bit in range(32):
        if flips >> bit & 1:
            forged[len(payload) - 4 + bit // 8] ^= 1 << (bit % 8)
    return bytes(forged)


def test_the_digest_covers_every_byte_of_the_payload() -> None:
    """A forged payload of the same length and CRC-32 as the signed one is rejected."""
    head, payload, digest = wire.encode_batch([1, 0, 11], [b'{"id":"1","text":"pay 10 EUR"}'], KEY)
    forged = _same_crc(payload, payload.index(b"1"))
    assert forged != payload and len(forged) == len(payload)
    assert zlib.crc32(forged) == zlib.crc32(payload)  # what version 2 checked the payload by
    with pytest.raises(wire.WireError, match="not signed"):
        wire.decode_batch([head, forged, digest], KEY)
    control = wire.encode_control({"t": "ack"}, KEY, wire.pack_ints([1, 0, 7]))
    with pytest.raises(wire.WireError, match="not signed"):
        wire.decode_control([control[0], wire.pack_ints([1, 0, 8]), control[2]], KEY)


def test_rejections_are_logged_once_per_interval_with_the_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A flood of 1,000 rejected messages logs one line at once and one with the rest."""
    rejections = wire.Rejections(logging.getLogger("test.rejections"), "inbox", interval=3600)
    with caplog.at_level(logging.WARNING, logger="test.rejections"):
        for n in range(1000):
            rejections.add(wire.WireError(f"bad {n}"))
        assert len(caplog.records) == 1 and "rejected 1 message (1 in all)" in caplog.text
        rejections.flush()
        rejections.flush()
    assert len(caplog.records) == 2
    assert "inbox rejected 999 messages (1000 in all); last: bad 999" in caplog.records[1].message


def test_control_round_trip() -> None:
    """A control message keeps its fields and its payload; packed integers round-trip."""
    parts = wire.encode_control({"t": "finished"}, KEY, b"a\nb")
    assert wire.decode_control(parts, KEY) == ({"t": "finished"}, b"a\nb")
    values = [0, -1, 2**63 - 1, -(2**63)]
    assert wire.unpack_ints(wire.pack_ints(values)) == values


def _head(
    version: int = wire.VERSION, kind: int = 0, body: bytes = b"", rest: bytes = b""
) -> bytes:
    return struct.pack("<2sBBI", b"SF", version, kind, len(body)) + rest


@pytest.mark.parametrize(
    "parts",
    [
        [b"garbage"],
        [b"", b""],
        [b"SF", b""],
        [_head(version=1), b""],
        [_head(kind=1), b""],
        [_head(body=b"{}", rest=wire.pack_ints([1, 0])), b"{}"],
        [_head(body=b"{}", rest=b"\x01\x02\x03"), b"{}"],
        [_head(body=b"{}", rest=wire.pack_ints([1, 0, 5])), b"{}\n{}"],
        [_head(body=b"{}\n{}", rest=wire.pack_ints([1, 0, 5])), b"{}\n{}"],
        [_head(body=b"{}", rest=wire.pack_ints([1, 0, 5])), b"{}\n"],
        [b"XX" + _head()[2:], b""],
    ],
)
def test_malformed_frames_are_rejected(parts: list[bytes]) -> None:
    """Every malformed frame raises WireError, never anything else, even when signed."""
    with pytest.raises(wire.WireError):
        wire.decode_batch(parts, KEY)
    with pytest.raises(wire.WireError):
        wire.decode_batch(wire.sign(list(parts), KEY), KEY)


def test_tracker_completes_in_any_report_order() -> None:
    """A root completes only when every descendant is both created and consumed."""
    tracker = Tracker()
    start = tracker.add(1, b"{}").tag
    a, b = 0x1234, 0x5678
    tracker.results([1, 0, a], [b"A"])  # a result arrives before the ack that created it
    assert not list(tracker.take_completed())
    tracker.ack([1, 0, start ^ a ^ b])
    assert not list(tracker.take_completed())
    tracker.results([1, 0, b], [b"B"])
    done = list(tracker.take_completed())
    assert [r.seq for r in done] == [1] and done[0].results == [b"A", b"B"]


def test_tracker_first_complete_attempt_wins() -> None:
    """After redelivery, whichever attempt completes first is the only one handed out."""
    tracker = Tracker()
    root = tracker.add(7, b"{}")
    first = root.tag
    tracker.redeliver(root)
    tracker.results([7, 1, 5], [b"second"])
    tracker.ack([7, 1, root.tag ^ 5])
    done = list(tracker.take_completed())
    assert [r.results for r in done] == [[b"second"]]
    tracker.results([7, 0, 9], [b"first, too late"])
    tracker.ack([7, 0, first ^ 9])
    assert not list(tracker.take_completed()) and 7 not in tracker.roots


def _run(runner: StageRunner, records: list[bytes]) -> Pending:
    ids: list[int] = []
    for seq in range(1, len(records) + 1):
        ids += (seq, 0, 1000 + seq)
    pending = Pending()
    runner.run_batch(ids, records, pending)
    return pending


def test_runner_validates_processes_and_acks() -> None:
    """A record's output takes its tag, so the XOR is balanced with no ack to send."""
    pending = _run(StageRunner(Split, "split", SplitConfig()), [b'{"id":"1","text":"a b"}'])
    assert pending.records == [b'{"id":"1","words":["a","b"]}']
    assert pending.ids == [1, 0, 1001]
    assert pending.acks == []


def test_runner_dead_letters_bad_records_and_goes_on() -> None:
    """Invalid JSON and a failing Input become dead letters; good records still pass."""
    pending = _run(
        StageRunner(Split, "split", SplitConfig()),
        [b"{oops", b'{"id":"2"}', b'{"id":"3","text":"ok"}'],
    )
    assert len(pending.records) == 1
    entries = [entry for _, _, entry in pending.dead]
    assert [e["line"] for e in entries] == [1, 2]
    assert entries[0]["record"] == "{oops" and entries[0]["error"] == "ValidationError"
    assert entries[1]["errors"][0]["loc"] == ["text"]
    assert pending.acks[0:3] == [1, 0, 1001] and pending.acks[3:6] == [2, 0, 1002]


def test_one_bad_line_in_a_slice_costs_only_itself() -> None:
    """A slice of raw lines is validated at once; one bad line (or a NaN word in a string,
    which is no NaN) sends it down the line-by-line path, which keeps order and tags."""
    lines = [b'{"id":"%d","text":"w%d"}' % (n, n) for n in range(16)]
    lines[3] = b'{"id":"3","text":"NaN and Infinity"}'
    lines[7] = b'{"id":"7","text":7}'
    pending = _run(StageRunner(Split, "split", SplitConfig()), lines)
    assert [json.loads(r)["id"] for r in pending.records] == [str(n) for n in range(16) if n != 7]
    assert pending.ids[0::3] == [n + 1 for n in range(16) if n != 7]
    assert pending.ids[2::3] == [1001 + n for n in range(16) if n != 7]  # one output: its tag
    ((_, _, entry),) = pending.dead
    assert entry["line"] == 8 and entry["errors"][0]["loc"] == ["text"]
    assert pending.acks == [8, 0, 1008]


class Counted(BaseModel):
    """An Input whose validator counts its calls."""

    id: str
    text: str

    @field_validator("text")
    @classmethod
    def _count(cls, value: str) -> str:
        validated_texts.append(value)
        return value


validated_texts: list[str] = []


class CountedSplit(Split):
    Input = Counted


@pytest.mark.parametrize("word", ["w4", "NaN"])  # NaN, a word: the slice goes one by one
def test_each_record_of_a_slice_is_validated_once(word: str) -> None:
    """A bad record in a slice costs no other record a second validation, before it or after."""
    validated_texts.clear()
    lines = [b'{"id":"%d","text":"w%d"}' % (n, n) for n in range(6)]
    lines[2] = b'{"id":"2","text":["not text"]}'
    lines[4] = b'{"id":"4","text":"%s"}' % word.encode()
    pending = _run(StageRunner(CountedSplit, "split", SplitConfig()), lines)
    assert validated_texts == ["w0", "w1", "w3", word, "w5"]
    assert [json.loads(r)["id"] for r in pending.records] == ["0", "1", "3", "4", "5"]
    ((_, _, entry),) = pending.dead
    assert entry["line"] == 3 and entry["errors"][0]["loc"] == ["text"]


def test_runner_retries_then_dead_letters() -> None:
    """An exception in process() is retried `retries` times, then dead-lettered."""
    runner = StageRunner(Split, "split", SplitConfig(fail_on="bad"), retries=2)
    pending = _run(runner, [b'{"id":"1","text":"bad"}'])
    ((_, _, entry),) = pending.dead
    assert entry["error"] == "RuntimeError" and "after 3 attempts" in entry["message"]
    assert "Traceback" in entry["traceback"]
    assert pending.acks == [1, 0, 1001]


def test_runner_times_out_a_hanging_record() -> None:
    """A process() call longer than the timeout is dead-lettered, not retried."""
    runner = StageRunner(Split, "split", SplitConfig(hang_on="zzz"), timeout=0.2)
    pending = _run(runner, [b'{"id":"1","text":"zzz"}', b'{"id":"2","text":"fine"}'])
    ((_, _, entry),) = pending.dead
    assert entry["error"] == "RecordTimeout"
    assert len(pending.records) == 1


def test_runner_fan_out_and_trusted_batches() -> None:
    """A generator fans out; a batch from another stage validates in one call."""
    runner = StageRunner(FanOut, "fan", trusted_input=True)
    pending = _run(runner, [b'{"id":"1","words":["x","y","z"]}', b'{"id":"2","words":[]}'])
    assert len(pending.records) == 3
    xor = 0
    for index in range(0, 9, 3):
        xor ^= pending.ids[index + 2]
    assert xor == 1001  # the children's tags XOR to their parent's: nothing to ack for it
    assert len({pending.ids[index + 2] for index in range(0, 9, 3)}) == 3
    assert pending.acks == [2, 0, 1002]  # the record that fanned out to nothing


def test_the_last_stage_tags_a_records_last_result_only() -> None:
    """The pipeline's results need no random tags: a record's last result takes its tag,
    the others 0, and a record that left none is acknowledged."""
    runner = StageRunner(FanOut, "fan", trusted_input=True, final=True)
    records = [
        b'{"id":"1","words":["x","y","z"]}',
        b'{"id":"2","words":[]}',
        b'{"id":"3","words":["w"]}',
    ]
    pending = _run(runner, records)
    assert pending.ids == [1, 0, 0, 1, 0, 0, 1, 0, 1001, 3, 0, 1003]
    assert pending.acks == [2, 0, 1002]
    tracker = Tracker()
    roots = [tracker.add(seq, record) for seq, record in enumerate(records, 1)]
    for root in roots:
        root.tag = root.value = 1000 + root.seq
    tracker.results(pending.ids, pending.records)
    tracker.ack(pending.acks)
    done = {root.seq: root.results for root in tracker.take_completed()}
    assert done == {1: pending.records[:3], 2: None, 3: pending.records[3:]}


def test_tracker_takes_a_records_results_across_two_frames() -> None:
    """A record's results cut by a frame boundary: the root completes with the second."""
    tracker = Tracker()
    root = tracker.add(4, b"{}")
    tracker.results([4, 0, 0, 4, 0, 0], [b"a", b"b"])
    assert not list(tracker.take_completed())
    tracker.results([4, 0, root.tag, 5, 0, 99], [b"c", b"other root's"])
    assert [r.results for r in tracker.take_completed()] == [[b"a", b"b", b"c"]]


def test_runner_rejects_wrong_output_type() -> None:
    """process() returning something other than its Output is a dead letter naming both."""

    class Wrong(CountWords):
        def process(self, item):  # type: ignore[no-untyped-def]
            return 42

    pending = _run(StageRunner(Wrong, "count"), [b'{"id":"1","words":[]}'])
    ((_, _, entry),) = pending.dead
    assert "returned int, expected Count" in entry["message"]


def test_a_list_is_checked_item_by_item_when_it_holds_something_else() -> None:
    """Lists of Outputs pass as they are; a list with a dict gets it validated as the Output,
    and a list with anything else dead-letters its record alone, the others kept in order."""

    class Lists(FanOut):
        def process(self, item):  # type: ignore[no-untyped-def]
            lines = [Line(id=f"{item.id}.{n}", text=word) for n, word in enumerate(item.words)]
            if item.id == "2":
                return [*lines, {"id": "2.x", "text": "from a dict"}]
            if item.id == "3":
                return [*lines, 42]
            return lines

    records = [
        b'{"id":"1","words":["a","b"]}',
        b'{"id":"2","words":["c"]}',
        b'{"id":"3","words":["d"]}',
        b'{"id":"4","words":["e"]}',
    ]
    pending = _run(StageRunner(Lists, "lists", final=True), records)
    assert [json.loads(r)["id"] for r in pending.records] == ["1.0", "1.1", "2.0", "2.x", "4.0"]
    assert pending.ids[0::3] == [1, 1, 2, 2, 4]
    ((root, _, entry),) = pending.dead
    assert root == 3 and "returned int, expected Line" in entry["message"]
    assert entry["stage"] == "lists"


def test_current_record_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The shared file tells which record, and which stage of a group, is inside process()."""
    path = str(tmp_path / "current")
    current = CurrentRecord(path)
    assert CurrentRecord.read(path) is None
    assert current.inside() is None
    current.set(42, 3, 12.5)
    assert CurrentRecord.read(path) == (42, 3, 0)
    assert current.inside() == (42, 3, 12.5)  # what the link thread's beats say
    current.for_member(2).set(43, 1)
    assert CurrentRecord.read(path) == (43, 1, 2)
    current.clear()
    assert CurrentRecord.read(path) is None
    assert current.inside() is None
    # The runner's own way: a slice's ids held once, then one store per call into them.
    second = current.for_member(1)
    second.hold([7, 0, 11, 8, 2, 12])
    second.where[0] = second.base + 1
    second.started[0] = 3.5
    assert CurrentRecord.read(path) == (8, 2, 1)
    assert current.inside() == (8, 2, 3.5)
    second.clear()
    assert CurrentRecord.read(path) is None


def test_output_frames_keep_to_the_record_and_byte_limits() -> None:
    """Outputs are cut into frames under both limits, in order, by count alone when small."""
    from stageflow.engine.worker import _frames

    records = [bytes([65 + n % 26]) * (n % 7 + 1) for n in range(50)]
    ids = [n for index in range(50) for n in (index, 0, 1000 + index)]
    size = sum(map(len, records))
    for budget in (size + 50, 40):  # everything fits / the bytes decide
        frames = list(_frames(ids, records, 8, budget, size))
        assert [r for _, frame in frames for r in frame] == records
        assert [n for frame_ids, _ in frames for n in frame_ids] == ids
        for frame_ids, frame in frames:
            assert len(frame_ids) == 3 * len(frame) and 1 <= len(frame) <= 8
            assert len(frame) == 1 or sum(len(r) + 1 for r in frame) <= budget
    assert len(list(_frames(ids, records, 8, size + 50, size))) == 7


def test_slices_follow_how_long_records_take() -> None:
    """Fast records go in ever bigger slices, up to what the current-record file holds; slow
    ones in smaller, down to one at a time; in between the size stays."""
    from stageflow.engine.worker import Slices

    slices = Slices(size=16, seconds=0.005, most=256)
    sizes = []
    for _ in range(6):
        slices.took(0.0001)
        sizes.append(slices.size)
    assert sizes == [32, 64, 128, 256, 256, 256]
    slices.took(0.005)
    assert slices.size == 256
    for _ in range(10):
        slices.took(0.05)
    assert slices.size == 1
    slices.took(0.05)
    assert slices.size == 1
