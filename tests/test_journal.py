"""The resume journal's file format: commits, torn tails, fingerprints (real files)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from stageflow.journal import Fingerprint, Journal, JournalError, Ranges, decode, encode, load


def fingerprint(tmp_path: Path, data: bytes = b'{"id": 1}\n' * 10) -> Fingerprint:
    pipeline = tmp_path / "p.yaml"
    if not pipeline.exists():
        pipeline.write_text("name: p\nstages: []\n")
    source = tmp_path / "in.jsonl"
    source.write_bytes(data)
    fd = os.open(source, os.O_RDONLY)
    try:
        return Fingerprint.of(str(pipeline), fd, None)
    finally:
        os.close(fd)


def test_line_sets_round_trip_through_their_text() -> None:
    """Completion-order line numbers become merged ranges and read back as the same set."""
    assert encode([9, 2, 3, 1, 5, 10]) == "1-3,5,9-10"
    assert encode([]) == "-"
    ranges = Ranges([*decode("1-3,5"), *decode("4,9-10"), *decode("-")])
    assert ranges.text() == "1-5,9-10"
    skipper = ranges.skipper()
    assert [n for n in range(12) if n in skipper] == [1, 2, 3, 4, 5, 9, 10]


def test_a_torn_last_commit_is_ignored_and_the_one_before_holds(tmp_path: Path) -> None:
    """A commit cut short by a crash (or with a bad CRC) counts for nothing, nor what follows."""
    path = str(tmp_path / "out.jsonl.stageflow-journal")
    journal = Journal.create(path, fingerprint(tmp_path), 7, 0)
    journal.commit(100, 10, [3, 1, 2])
    journal.commit(250, 30, [5, 4])
    journal.close()
    whole = load(path)
    assert (whole.output_length, whole.dead_letter_length, whole.done.text()) == (250, 30, "1-5")
    content = Path(path).read_bytes()
    Path(path).write_bytes(content[:-3])  # torn inside the last commit
    torn = load(path)
    assert (torn.output_length, torn.dead_letter_length, torn.done.text()) == (100, 10, "1-3")
    garbled = content.replace(b"100 10 1-3", b"100 10 1-4")
    Path(path).write_bytes(garbled)
    assert load(path).output_length == 7 and load(path).done.text() == "-"


def test_fingerprints_tell_another_input_or_pipeline(tmp_path: Path) -> None:
    """Same files match; a changed input (size or bytes) or pipeline file is named."""
    first = fingerprint(tmp_path)
    assert first.mismatch(fingerprint(tmp_path)) is None
    assert "input differs (it is" in str(first.mismatch(fingerprint(tmp_path, b"x" * 5)))
    same_size = b'{"id": 2}\n' + b'{"id": 1}\n' * 9
    assert "first or last bytes" in str(first.mismatch(fingerprint(tmp_path, same_size)))
    (tmp_path / "p.yaml").write_text("name: q\nstages: []\n")
    assert "pipeline file" in str(first.mismatch(fingerprint(tmp_path)))


def test_a_missing_or_foreign_journal_is_refused_in_one_sentence(tmp_path: Path) -> None:
    """load() explains a missing journal and a file that is not one."""
    with pytest.raises(JournalError, match="there is no journal"):
        load(str(tmp_path / "nothing"))
    (tmp_path / "other").write_text("hello\n")
    with pytest.raises(JournalError, match="is not a stageflow journal"):
        load(str(tmp_path / "other"))


def test_a_dead_letter_path_added_on_resume_is_named_in_words(tmp_path: Path) -> None:
    """A journal of a run without --dead-letter says so, rather than 'wrote None'."""
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text("name: p\n")
    source = tmp_path / "in.jsonl"
    source.write_bytes(b'{"id": 1}\n' * 10)
    with open(source, "rb") as handle:
        fd = handle.fileno()
        without = Fingerprint.of(str(pipeline), fd, None)
        added = Fingerprint.of(str(pipeline), fd, str(tmp_path / "dead.jsonl"))
    assert without.mismatch(added) == (
        "the dead-letter file differs (the journalled run had no --dead-letter)"
    )
    assert added.mismatch(without) == (
        f"the dead-letter file differs (the journalled run wrote {str(tmp_path / 'dead.jsonl')!r})"
    )
