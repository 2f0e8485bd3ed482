"""Bad bytes are data: every input line ends as results or as exactly one dead letter.

Each test runs ``stageflow run`` on good lines with bad ones among them, all in one frame
(one worker, one batch), and counts: every good record delivered once, every bad one
dead-lettered once, its original bytes recoverable from the dead letter.
"""

from __future__ import annotations

import base64
import codecs
import gzip
import json
from pathlib import Path

import pytest
from pydantic_core import from_json

import stageflow
from stageflow import InvalidOutput, Pipeline
from stageflow.engine.runner import Pending, StageRunner, dead_letter
from tests.engine.stages import Count, Line, Split
from tests.engine.test_cli_run import write_pipeline
from tests.helpers import run_stageflow

GOOD = 40


def good(i: int) -> bytes:
    return json.dumps({"id": f"g{i}", "text": "a b"}).encode()


def original_bytes(entry: dict) -> bytes | object:  # type: ignore[type-arg]
    """The line a dead letter keeps: bytes when kept as text or base64, else the parsed JSON."""
    if "record_base64" in entry:
        assert entry["record"] is None
        return base64.b64decode(entry["record_base64"])
    if isinstance(entry["record"], str):
        return entry["record"].encode("utf-8")
    return entry["record"]


SPLIT = [{"name": "split", "uses": "tests.engine.stages:Split"}]
SCALE = [{"name": "scale", "uses": "tests.engine.stages:Scale", "config": {"factor": 10}}]


def readings() -> list[bytes]:
    return [json.dumps({"id": f"g{i}", "value": i}).encode() for i in range(GOOD)]


def run_mixed(
    tmp_path: Path,
    bad: list[bytes],
    stages: list[dict] = SPLIT,  # type: ignore[type-arg]
    good_lines: list[bytes] | None = None,
) -> tuple[list[dict], dict[int, dict]]:  # type: ignore[type-arg]
    """Run good lines with ``bad`` ones interleaved; return the results and the dead letters."""
    lines = list(good_lines) if good_lines is not None else [good(i) for i in range(GOOD)]
    for n, line in enumerate(bad):
        lines.insert(3 + 5 * n, line)
    source = tmp_path / "in.jsonl"
    source.write_bytes(b"\n".join(lines) + b"\n")
    pipe = write_pipeline(tmp_path / "p.yaml", stages)
    out, dead = tmp_path / "out.jsonl", tmp_path / "dead.jsonl"
    done = run_stageflow(
        "run", str(pipe), "-i", str(source), "-o", str(out), "--dead-letter", str(dead),
        "--max-errors", str(len(bad)),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    results = [json.loads(line) for line in out.read_text().splitlines()]
    entries = [json.loads(line) for line in dead.read_text().splitlines()]
    by_line = {entry["line"]: entry for entry in entries}
    assert len(by_line) == len(entries) == len(bad), entries
    for entry in entries:
        line = lines[entry["line"] - 1]
        kept = original_bytes(entry)
        assert kept == line or kept == from_json(line), (entry, line)
    return results, by_line


def assert_all_good_delivered(results: list[dict], count: int = GOOD) -> None:  # type: ignore[type-arg]
    assert sorted(r["id"] for r in results) == sorted(f"g{i}" for i in range(count))


def test_non_utf8_lines_are_dead_lettered_with_their_bytes(tmp_path: Path) -> None:
    """A latin-1 line and a gzip blob are dead-lettered once each, kept as base64."""
    latin1 = '{"id": "x", "text": "café"}'.encode("latin-1")
    blob = gzip.compress(b'{"id": "y", "text": "zipped"}\n' * 20).replace(b"\n", b" ")
    results, dead = run_mixed(tmp_path, [latin1, blob])
    assert_all_good_delivered(results)
    assert all("record_base64" in entry for entry in dead.values())
    assert all(entry["error"] == "ValidationError" for entry in dead.values())
    assert "Invalid JSON" in dead[4]["message"]


def test_json_of_any_depth_is_dead_lettered(tmp_path: Path) -> None:
    """Arrays nested 100,000 deep and objects nested 1,500 deep are dead letters, not a hang."""
    arrays = b"[" * 100_000 + b"]" * 100_000
    objects = b'{"a":' * 1500 + b"1" + b"}" * 1500
    results, dead = run_mixed(tmp_path, [arrays, objects])
    assert_all_good_delivered(results)
    assert all("recursion limit" in entry["message"] for entry in dead.values())


def test_lone_surrogates_and_nul_bytes_are_dead_lettered(tmp_path: Path) -> None:
    """An escaped lone surrogate, its raw bytes, and raw NUL bytes are one dead letter each."""
    escaped = b'{"id": "s", "text": "\\ud800"}'
    raw = b'{"id": "r", "text": "\xed\xa0\x80"}'
    nul = b'{"id": "n", "text": "a\x00b"}'
    results, dead = run_mixed(tmp_path, [escaped, raw, nul])
    assert_all_good_delivered(results)
    assert dead[4]["record"] == escaped.decode()
    assert base64.b64decode(dead[9]["record_base64"]) == raw
    assert dead[14]["record"] == nul.decode()


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity"])
def test_nan_and_infinity_literals_are_invalid_json(tmp_path: Path, literal: bytes) -> None:
    """NaN/Infinity literals, which Python's json accepts, are dead-lettered as invalid JSON."""
    bad = b'{"id": "bad", "value": ' + literal + b"}"
    results, dead = run_mixed(tmp_path, [bad], SCALE, readings())
    assert sorted(r["value"] for r in results) == [10.0 * i for i in range(GOOD)]
    (entry,) = dead.values()
    assert entry["errors"][0]["type"] == "json_invalid"
    assert "NaN, Infinity and -Infinity are not JSON" in entry["message"]
    assert entry["record"] == bad.decode()  # kept as text: it is not JSON


def test_floats_json_cannot_hold_are_errors_naming_the_field(tmp_path: Path) -> None:
    """A "nan" string, and a product overflowing to inf, are dead letters naming the field."""
    bad = [b'{"id": "nan", "value": "nan"}', b'{"id": "big", "value": 1e308}']
    results, dead = run_mixed(tmp_path, bad, SCALE, readings())
    assert sorted(r["value"] for r in results) == [10.0 * i for i in range(GOOD)]
    assert all(r["value"] is not None for r in results)
    for entry in dead.values():
        assert entry["error"] == "InvalidOutput"
        assert "field 'value'" in entry["message"] and "written as null" in entry["message"]


def test_a_bom_at_the_start_of_the_input_is_skipped(tmp_path: Path) -> None:
    """A UTF-8 BOM before the first line does not make that line a dead letter."""
    source = tmp_path / "in.jsonl"
    source.write_bytes(codecs.BOM_UTF8 + b"\n".join(good(i) for i in range(GOOD)) + b"\n")
    pipe = write_pipeline(tmp_path / "p.yaml", SPLIT)
    out = tmp_path / "out.jsonl"
    done = run_stageflow("run", str(pipe), "-i", str(source), "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert_all_good_delivered([json.loads(line) for line in out.read_text().splitlines()])


def test_oversized_records_and_lone_surrogates_from_python_are_dead_lettered() -> None:
    """Through the embedding API: a record larger than one frame and a str with a lone
    surrogate are dead-lettered once each; the records around them pass."""
    pipeline = Pipeline("big", [{"name": "split", "uses": Split}])
    items: list[object] = [Line(id=f"g{i}", text="a b") for i in range(GOOD)]
    items.insert(7, {"id": "huge", "text": "x" * 40_000})
    items.insert(12, '{"id": "s", "text": "\ud800"}')
    run = pipeline.run(items, max_errors=2, max_message_size=64 * 1024)
    ids = sorted(result.id for result in run)
    assert ids == sorted(f"g{i}" for i in range(GOOD))
    huge, surrogate = sorted(run.report.dead_letters, key=lambda entry: entry["line"])
    assert huge["error"] == "RecordTooLarge" and huge["line"] == 8
    assert huge["record"]["text"] == "x" * 40_000
    assert surrogate["line"] == 13 and surrogate["error"] == "ValidationError"
    raw = base64.b64decode(surrogate["record_base64"])
    assert raw.decode("utf-8", "surrogatepass") == items[12]


def test_the_cli_sets_the_message_size_and_the_refusal_names_its_option(tmp_path: Path) -> None:
    """A 1 MiB record is refused under --max-message-size 1, with the option to raise in the
    dead letter, and passes under --max-message-size 8."""
    source = tmp_path / "in.jsonl"
    big = json.dumps({"id": "big", "text": "x " * (1 << 19)}).encode()
    source.write_bytes(b"\n".join([good(0), big, good(1)]) + b"\n")
    pipe = write_pipeline(tmp_path / "p.yaml", SPLIT)
    out, dead = tmp_path / "out.jsonl", tmp_path / "dead.jsonl"
    files = ("-i", str(source), "-o", str(out), "--dead-letter", str(dead), "--max-errors", "1")
    small = run_stageflow("run", str(pipe), *files, "--max-message-size", "1")
    assert small.returncode == 0, small.stderr
    (entry,) = [json.loads(line) for line in dead.read_text().splitlines()]
    assert entry["error"] == "RecordTooLarge" and entry["line"] == 2
    assert "raise --max-message-size" in entry["message"], entry
    assert len(out.read_text().splitlines()) == 2
    roomy = run_stageflow("run", str(pipe), *files, "--max-message-size", "8")
    assert roomy.returncode == 0, roomy.stderr
    assert dead.read_text() == "" and len(out.read_text().splitlines()) == 3
    wrong = run_stageflow("run", str(pipe), *files, "--max-message-size", "0")
    assert wrong.returncode == 2 and "from 1 to 2047" in wrong.stderr, wrong.stderr


# -- the runner alone: no failure while dead-lettering costs a frame its other records --------


class _Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no text for you")


class _Awkward(stageflow.Stage):
    """Line -> Count: raises an exception whose str() fails, or returns a dict missing fields."""

    name = "awkward"
    Input = Line
    Output = Count

    def process(self, item: Line) -> object:
        if item.text == "unprintable":
            raise _Unprintable
        if item.text == "half":
            return {"id": item.id}  # no "words"
        if item.text == "wrong":
            return {"words": "many"}  # no "id", and "words" is not an int
        return Count(id=item.id, words=len(item.text.split()))


def run_frame(records: list[bytes]) -> Pending:
    ids: list[int] = []
    for seq in range(1, len(records) + 1):
        ids += (seq, 0, 1000 + seq)
    pending = Pending()
    StageRunner(_Awkward, "awkward", retries=0).run_batch(ids, records, pending)
    return pending


def test_dead_letter_itself_never_raises() -> None:
    """An entry whose errors cannot be encoded still comes out, as JSON, with the bytes kept."""
    circular: list[object] = []
    circular.append(circular)
    entry = dead_letter(3, "s", "ValidationError", "bad", b"\xff\xfe", errors=circular)
    assert entry["errors"] is None and "could not be described" in entry["note"]
    assert base64.b64decode(entry["record_base64"]) == b"\xff\xfe"
    json.dumps(entry)


def test_a_frame_survives_every_kind_of_bad_record() -> None:
    """Good records of a frame are processed whatever the bad ones around them do."""
    records = [
        b'{"id":"1","text":"a b"}',
        b'{"id":"2","text":"unprintable"}',
        b"\xe9\x00[" * 10,
        b"[" * 5000,
        b'{"id":"5","text":"half"}',
        b'{"id":"6","text":"wrong"}',
        b'{"id":"7","text":"c"}',
    ]
    pending = run_frame(records)
    assert pending.records == [b'{"id":"1","words":2}', b'{"id":"7","words":1}']
    assert pending.processed == {"awkward": 7}
    # Each record is accounted for: by its output's tag, or by an ack when it left none.
    assert pending.ids == [1, 0, 1001, 7, 0, 1007]
    assert [pending.acks[i] for i in range(0, len(pending.acks), 3)] == [2, 3, 4, 5, 6]
    dead = {root: entry for root, _, entry in pending.dead}
    assert sorted(dead) == [2, 3, 4, 5, 6]
    assert dead[2]["error"] == "_Unprintable" and "str() failed" in dead[2]["message"]
    assert "record_base64" in dead[3]
    json.dumps(list(dead.values()))  # each entry travels as JSON


def test_output_errors_are_public_and_name_every_field() -> None:
    """A dict that is not a valid Output is an InvalidOutput naming each field, with errors()."""
    pending = run_frame([b'{"id":"5","text":"half"}', b'{"id":"6","text":"wrong"}'])
    half, wrong = (entry for _, _, entry in pending.dead)
    assert half["error"] == "InvalidOutput" == InvalidOutput.__name__
    assert [e["loc"] for e in half["errors"]] == [["words"]]
    assert "words: Field required" in half["message"]
    assert sorted(e["loc"][0] for e in wrong["errors"]) == ["id", "words"]
    assert "id: Field required" in wrong["message"] and "words: Input should be" in wrong["message"]
