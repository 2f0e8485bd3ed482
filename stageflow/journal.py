"""The resume journal kept beside a ``stageflow run --output`` file.

A run writes results in completion order, so after a stop "the first N lines" does not say
what the output holds. The journal does: an append-only text file, ``OUTPUT.stageflow-journal``,
whose first line is a JSON header (what the run was: a fingerprint of its pipeline file and
input, and its files) and whose every further line is one commit::

    <output length> <dead-letter length> <line ranges> <crc32>

meaning "these input lines (``1-200,203``) are complete, and the first <output length> bytes
of the output and <dead-letter length> bytes of the dead-letter file hold exactly the results
and dead letters of every line committed so far". A commit is written only after both files
were fsynced up to those lengths, so it never claims bytes a crash could lose; a torn last
commit fails its CRC and is ignored, and the commit before it still holds.

:func:`load` reads a journal back for ``--resume``; :class:`Journal` writes one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

__all__ = ["SUFFIX", "Fingerprint", "Journal", "JournalError", "Resume", "load"]

SUFFIX = ".stageflow-journal"
FORMAT = "stageflow-journal/1"
#: Bytes hashed at each end of the input: enough to tell another file, cheap for a huge one.
_SAMPLE = 64 * 1024


class JournalError(Exception):
    """A journal that cannot be used for ``--resume``: missing, damaged, or another run's."""


@dataclass(frozen=True)
class Fingerprint:
    """What a journal belongs to: the pipeline file's content and the input's identity."""

    pipeline: str
    input_size: int
    input_sample: str
    dead_letter: str | None

    @classmethod
    def of(cls, pipeline_path: str, input_fd: int, dead_letter: str | None) -> Fingerprint:
        with open(pipeline_path, "rb") as handle:
            pipeline = hashlib.sha256(handle.read()).hexdigest()
        size = os.fstat(input_fd).st_size
        sample = hashlib.sha256(os.pread(input_fd, _SAMPLE, 0))
        sample.update(os.pread(input_fd, _SAMPLE, max(0, size - _SAMPLE)))
        where = os.path.realpath(dead_letter) if dead_letter else None
        return cls(pipeline, size, sample.hexdigest(), where)

    def mismatch(self, other: Fingerprint) -> str | None:
        """Why ``other`` (this run) is not the run this journal was written by, if it is not."""
        if other.pipeline != self.pipeline:
            return "the pipeline file's content differs"
        if other.input_size != self.input_size:
            return (
                f"the input differs (it is {other.input_size} bytes, the journalled input "
                f"was {self.input_size})"
            )
        if other.input_sample != self.input_sample:
            return "the input differs (its first or last bytes changed)"
        if other.dead_letter != self.dead_letter:
            if self.dead_letter is None:
                return "the dead-letter file differs (the journalled run had no --dead-letter)"
            return f"the dead-letter file differs (the journalled run wrote {self.dead_letter!r})"
        return None


class Ranges:
    """A set of line numbers as sorted, disjoint, non-adjacent ``[first, last]`` ranges."""

    def __init__(self, ranges: Iterable[tuple[int, int]] = ()) -> None:
        merged: list[list[int]] = []
        for first, last in sorted(ranges):
            if merged and first <= merged[-1][1] + 1:
                merged[-1][1] = max(merged[-1][1], last)
            else:
                merged.append([first, last])
        self._firsts = [first for first, _ in merged]
        self._lasts = [last for _, last in merged]

    def __len__(self) -> int:
        return sum(last - first + 1 for first, last in zip(self._firsts, self._lasts, strict=True))

    def text(self) -> str:
        """The set as a commit writes it: ``"1-3,5,9"``, ``"-"`` for none."""
        parts = [
            f"{first}-{last}" if last > first else str(first)
            for first, last in zip(self._firsts, self._lasts, strict=True)
        ]
        return ",".join(parts) or "-"

    def skipper(self) -> Skipper:
        return Skipper(self._firsts, self._lasts)


class Skipper:
    """Answers "is line n in the set?" for increasing n in constant time each."""

    def __init__(self, firsts: list[int], lasts: list[int]) -> None:
        self._firsts = firsts
        self._lasts = lasts
        self._at = 0

    def __contains__(self, number: int) -> bool:
        lasts = self._lasts
        while self._at < len(lasts) and lasts[self._at] < number:
            self._at += 1
        return self._at < len(lasts) and self._firsts[self._at] <= number


def encode(numbers: list[int]) -> str:
    """``[5, 1, 2, 3, 9]`` as ``"1-3,5,9"``; ``"-"`` for none. Sorts ``numbers`` in place."""
    if not numbers:
        return "-"
    numbers.sort()
    parts = []
    first = last = numbers[0]
    for number in numbers:
        if number > last + 1:
            parts.append(f"{first}-{last}" if last > first else str(first))
            first = number
        last = number
    parts.append(f"{first}-{last}" if last > first else str(first))
    return ",".join(parts)


def decode(text: str) -> Iterator[tuple[int, int]]:
    if text == "-":
        return
    for part in text.split(","):
        first, _, last = part.partition("-")
        yield int(first), int(last or first)


def _commit_line(output: int, dead: int, ranges: str) -> bytes:
    body = f"{output} {dead} {ranges}"
    return f"{body} {zlib.crc32(body.encode()):08x}\n".encode()


def _parse_commit(line: bytes) -> tuple[int, int, str] | None:
    """A commit line's fields, or None for a torn or damaged one."""
    if not line.endswith(b"\n"):
        return None
    body, _, crc = line[:-1].decode("ascii", "replace").rpartition(" ")
    if crc != f"{zlib.crc32(body.encode()):08x}":
        return None
    output, dead, ranges = body.split(" ")
    return int(output), int(dead), ranges


@dataclass
class Resume:
    """What a journal says: where to truncate each file, and which lines are complete."""

    fingerprint: Fingerprint
    output_length: int
    dead_letter_length: int
    done: Ranges = field(default_factory=Ranges)


def load(path: str) -> Resume:
    """Read the journal at ``path``; raise :class:`JournalError` saying why it cannot serve."""
    try:
        with open(path, "rb") as handle:
            header = handle.readline()
            commits = handle.readlines()
    except FileNotFoundError:
        raise JournalError(
            f"there is no journal {path} to resume from: the last run finished, or ran "
            "with --no-journal or with output that is not a regular file; run without --resume"
        ) from None
    except OSError as exc:
        raise JournalError(f"cannot read the journal {path}: {exc.strerror}") from exc
    try:
        meta = json.loads(header)
        if meta.get("format") != FORMAT:
            raise ValueError(meta.get("format"))
        fingerprint = Fingerprint(**meta["fingerprint"])
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise JournalError(
            f"{path} is not a stageflow journal (or is damaged); run without --resume"
        ) from exc
    resume = Resume(fingerprint, 0, 0)
    ranges: list[tuple[int, int]] = []
    for line in commits:
        parsed = _parse_commit(line)
        if parsed is None:
            break  # a commit torn by a crash, and anything after it, never happened
        resume.output_length, resume.dead_letter_length, text = parsed
        ranges.extend(decode(text))
    resume.done = Ranges(ranges)
    return resume


class Journal:
    """An open journal: :meth:`create` a fresh one, then :meth:`commit` as the run goes."""

    def __init__(self, path: str, fd: int) -> None:
        self.path = path
        self._fd = fd

    @classmethod
    def create(
        cls,
        path: str,
        fingerprint: Fingerprint,
        output_length: int,
        dead_letter_length: int,
        done: Ranges | None = None,
    ) -> Journal:
        """Write a journal that holds one commit, atomically replacing any old one."""
        header: dict[str, Any] = {"format": FORMAT, "fingerprint": fingerprint.__dict__}
        content = json.dumps(header).encode() + b"\n"
        content += _commit_line(output_length, dead_letter_length, (done or Ranges()).text())
        temporary = f"{path}.tmp"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            os.write(fd, content)
            os.fsync(fd)
            os.replace(temporary, path)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
        _sync_folder(path)
        return cls(path, fd)

    def commit(self, output_length: int, dead_letter_length: int, lines: list[int]) -> None:
        """Record that ``lines`` are complete; both files must already be durable that far."""
        os.write(self._fd, _commit_line(output_length, dead_letter_length, encode(lines)))

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def remove(self) -> None:
        """The run finished: nothing is left to resume."""
        self.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


def _sync_folder(path: str) -> None:
    """Make a rename in ``path``'s folder durable (a power cut could undo it otherwise)."""
    fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
