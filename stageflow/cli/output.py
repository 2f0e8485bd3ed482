"""The output side of ``stageflow run``: results and dead letters to their files, in step
with the resume journal, and what to say when a run stops early.

Nothing is opened for writing until the run has started, a worker of every stage being ready
(:meth:`Outputs.open` runs as the engine's ``on_started``; after it, a run can no longer fail
to start), so a run that fails to start leaves existing files untouched.
Both files are written through our own buffers with ``os.write``: the byte length the OS
holds is then known exactly, which is what the journal records (:mod:`stageflow.journal`).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import shlex
import stat
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from itertools import chain
from operator import itemgetter
from typing import IO, Any, cast

from stageflow.journal import SUFFIX, Fingerprint, Journal, JournalError, Resume, Skipper, load

__all__ = ["OutputClosed", "OutputSetupError", "Outputs", "SinkFailed"]

#: Buffered output handed to the OS at this size, or whenever the run waits: big enough to
#: make write calls rare, small enough that a closed pipe is noticed soon.
_FLUSH_BYTES = 64 * 1024
#: Seconds between journal commits: each fsyncs both files first, off the main thread.
COMMIT_EVERY = 1.0


class OutputSetupError(Exception):
    """An output path or the journal cannot be used; nothing was written (exit 2)."""


class OutputClosed(Exception):
    """The reader of stdout went away (EPIPE, e.g. ``| head -1``)."""


class SinkFailed(Exception):
    """Writing or syncing an output file failed (ENOSPC, EIO, ...)."""

    def __init__(self, target: Target, exc: OSError) -> None:
        code = errno.errorcode.get(exc.errno or 0, "error")
        super().__init__(f"cannot write {target.name}: {exc.strerror} ({code})")


class Target:
    """One file the run writes, through a buffer whose bytes are counted as the OS takes them."""

    def __init__(self, label: str, path: str) -> None:
        self.label = label
        self.path = path
        self.fd = -1
        self.buffer = bytearray()
        self.written = 0  # bytes the OS holds, from the start of the file
        self.lines = 0  # lines of this run the OS holds: results, or dead letters
        self.buffered_lines = 0  # lines in the buffer
        self.regular = path != "-" and _regular_or_missing(path)

    @property
    def name(self) -> str:
        return f"{self.label} (stdout)" if self.path == "-" else f"{self.label} {self.path!r}"

    def check(self) -> None:
        """Fail now, without touching the file, if it could not be opened for writing later."""
        if self.path == "-":
            return
        folder = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(folder):
            raise OutputSetupError(
                f"cannot open {self.name}: its folder {folder!r} does not exist; create it or "
                "choose another path"
            )
        if os.path.isdir(self.path):
            raise OutputSetupError(f"cannot open {self.name}: it is a folder; name a file")
        probe = self.path if os.path.exists(self.path) else folder
        if not os.access(probe, os.W_OK):
            raise OutputSetupError(
                f"cannot open {self.name}: permission denied on {probe!r}; check the path"
            )

    def open(self, cut: int | None) -> None:
        """Open for writing, cut to ``cut`` bytes (0: empty it), or whole to append to (None)."""
        if self.path == "-":
            sys.stdout.flush()
            self.fd = sys.stdout.fileno()
            return
        try:
            self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o666)
            if self.regular and cut is not None:
                os.ftruncate(self.fd, cut)
            self.written = os.lseek(self.fd, 0, os.SEEK_END) if self.regular else 0
        except OSError as exc:
            raise OutputSetupError(f"cannot open {self.name}: {exc.strerror}") from exc

    def size(self) -> int:
        """The file's length now, before it is opened (0 if it does not exist)."""
        try:
            return os.stat(self.path).st_size
        except FileNotFoundError:
            return 0

    def write(self, text: str) -> int:
        """Take one dead letter from the engine; it reaches the file on the next drain."""
        self.buffer += text.encode()
        self.buffered_lines += 1
        return len(text)

    def drain(self) -> None:
        buffer = self.buffer
        if not buffer or self.fd < 0:
            return
        try:
            with memoryview(buffer) as view:
                done = 0
                while done < len(view):
                    done += os.write(self.fd, view[done:])
        except BrokenPipeError:
            raise OutputClosed from None
        except OSError as exc:
            if self.regular:
                # No torn line at the end: the file holds exactly what was written before.
                with contextlib.suppress(OSError):
                    os.ftruncate(self.fd, self.written)
            raise SinkFailed(self, exc) from exc
        self.written += len(buffer)
        buffer.clear()
        self.lines += self.buffered_lines
        self.buffered_lines = 0

    def sync(self) -> None:
        if self.regular:
            try:
                os.fsync(self.fd)
            except OSError as exc:
                raise SinkFailed(self, exc) from exc

    def close(self) -> None:
        if self.fd >= 0 and self.path != "-":
            os.close(self.fd)
        self.fd = -1


class Outputs:
    """The result and dead-letter files of one ``stageflow run``, and their journal.

    The journal is kept when the output and the input are regular files (and not
    ``--no-journal``). Without it, the run still tracks which lines are complete, so that a
    stop can say whether ``--skip N`` would resume it exactly.
    """

    def __init__(self, args: argparse.Namespace, input_fd: int) -> None:
        self.args = args
        self.output = Target("the output file", args.output)
        self.dead = Target("the dead-letter file", args.dead_letter) if args.dead_letter else None
        self.opened = False
        self.busy = False  # inside our own bookkeeping: a second signal waits for its end
        self.interrupt_pending = False
        self.resume: Resume | None = None
        self.journal: Journal | None = None
        self.journal_path = f"{args.output}{SUFFIX}"
        self._fingerprint: Fingerprint | None = None
        self._buffered: list[int] = []  # complete lines whose results are not written yet
        self._pending: list[int] = []  # complete lines written but not yet committed
        self._dead_boundary = 0  # dead-letter bytes that belong to lines handed to us
        self._commits: ThreadPoolExecutor | None = None
        self._commit: Future[None] | None = None
        self._commit_due = 0.0
        self._failed = False
        # Without a journal: lines read but not written, and the highest written one.
        self.in_flight: set[int] = set()
        self.highest_done = 0
        for target in self.targets:
            target.check()
            if target.path != "-" and _same_file(input_fd, target.path):
                raise OutputSetupError(
                    f"{target.name} is the input file; writing it would destroy the input"
                )
        wanted = not args.no_journal and self.output.regular
        if wanted and _is_regular_fd(input_fd):
            dead_path = self.dead.path if self.dead is not None else None
            self._fingerprint = Fingerprint.of(args.pipeline, input_fd, dead_path)
        self.journaled = self._fingerprint is not None
        if args.resume:
            self._load_resume()

    @property
    def targets(self) -> list[Target]:
        return [self.output] if self.dead is None else [self.output, self.dead]

    @property
    def dead_letter_sink(self) -> IO[str] | None:
        # The engine only calls write(str) on it.
        return cast("IO[str] | None", self.dead)

    def _load_resume(self) -> None:
        if self._fingerprint is None:
            raise OutputSetupError(
                "--resume needs a regular file as --output and as input (a journal is kept "
                "only then)"
            )
        try:
            resume = load(self.journal_path)
        except JournalError as exc:
            raise OutputSetupError(str(exc)) from exc
        why = resume.fingerprint.mismatch(self._fingerprint)
        if why is not None:
            raise OutputSetupError(
                f"--resume refused: {self.journal_path} belongs to another run ({why}); run "
                "without --resume to start over"
            )
        lengths = [resume.output_length, resume.dead_letter_length]
        for target, length in zip(self.targets, lengths, strict=False):
            if target.regular and target.size() < length:
                raise OutputSetupError(
                    f"--resume refused: {target.name} is shorter ({target.size()} bytes) than "
                    f"its journal says ({length}); it was changed since: run without --resume"
                )
        self.resume = resume

    def skipper(self) -> Skipper | None:
        """The lines a resumed run must not process again."""
        return self.resume.done.skipper() if self.resume is not None else None

    # -- the run --------------------------------------------------------------------------

    def open(self) -> None:
        """The run has started: only now truncate or create the files and the journal."""
        self.busy = True
        resume = self.resume
        cuts: list[int | None]
        if resume is not None:
            cuts = [resume.output_length, resume.dead_letter_length]
        elif self.args.append:
            cuts = [None, None]
        else:
            cuts = [0, 0]
        if self._fingerprint is not None:
            # The journal first: if we stop before the files are cut to what it claims,
            # --resume cuts them.
            lengths = [0, 0]
            for at, (target, cut) in enumerate(zip(self.targets, cuts, strict=False)):
                lengths[at] = target.size() if cut is None and target.regular else cut or 0
            try:
                self.journal = Journal.create(
                    self.journal_path,
                    self._fingerprint,
                    lengths[0],
                    lengths[1],
                    resume.done if resume is not None else None,
                )
            except OSError as exc:
                raise SinkFailed(Target("the journal", self.journal_path), exc) from exc
            self._commits = ThreadPoolExecutor(1, thread_name_prefix="stageflow-journal")
            self._commit_due = time.monotonic() + COMMIT_EVERY
        for target, cut in zip(self.targets, cuts, strict=False):
            target.open(cut)
        self.opened = True
        self._dead_boundary = self.dead.written if self.dead is not None else 0
        self._release()

    def complete(self, batch: list[tuple[int, list[bytes]]]) -> None:
        """Take the results of completed input lines: ``(seq, results)`` each (``seq`` <= 0
        for finish()'s), as :meth:`stageflow.Run.batches` yields them."""
        self.busy = True
        buffer = self.output.buffer
        # Once per input line, so at C speed: every result line of the batch, joined.
        lines = list(chain.from_iterable(map(itemgetter(1), batch)))
        if lines:
            buffer += b"\n".join(lines)
            buffer += b"\n"
            self.output.buffered_lines += len(lines)
        # Only a seq above 0 is an input line's (finish()'s outputs have none).
        self._buffered += filter((0).__lt__, map(itemgetter(0), batch))
        dead = self.dead
        if dead is not None:
            self._dead_boundary = dead.written + len(dead.buffer)
        if len(buffer) >= _FLUSH_BYTES:
            self._drain()
        self.busy = False  # as _release(), without a call per record
        if self.interrupt_pending:
            self._release()

    def idle(self) -> None:
        """The run is about to wait: let readers see what is ready, and commit if due."""
        self.busy = True
        if self.dead is not None:
            self._dead_boundary = self.dead.written + len(self.dead.buffer)
        self._drain()
        self._release()

    #: For the progress line (stageflow.cli.observe): results before it reach the terminal.
    flush = idle

    def fileno(self) -> int:
        """The output's descriptor (stdout's before the file is open), as a file has one."""
        return sys.stdout.fileno() if self.output.path == "-" else self.output.fd

    def _release(self) -> None:
        self.busy = False
        if self.interrupt_pending:
            self.interrupt_pending = False
            raise KeyboardInterrupt

    def _drain(self, commit: bool = True) -> None:
        try:
            # Dead letters first: if the output then fails, the lines count as not done, and
            # a resume may repeat a dead letter but never a result.
            for target in reversed(self.targets):
                target.drain()
        except (SinkFailed, OutputClosed):
            self._failed = True
            raise
        lines, self._buffered = self._buffered, []
        if self.journaled:
            self._pending += lines
        elif lines:
            discard = self.in_flight.discard
            for seq in lines:
                discard(seq)
            self.highest_done = max(self.highest_done, *lines)
        if commit and self.journal is not None and time.monotonic() >= self._commit_due:
            self._start_commit()

    def _start_commit(self) -> None:
        """Hand a commit of everything drained so far to the journal thread, if it is free."""
        previous = self._commit
        if previous is not None:
            if not previous.done():
                return  # the last fsync is still running; these lines go in the next one
            self._settle(previous)
        assert self._commits is not None
        lines, self._pending = self._pending, []
        self._commit = self._commits.submit(
            self._sync_and_commit, self.output.written, self._dead_boundary, lines
        )
        self._commit_due = time.monotonic() + COMMIT_EVERY

    def _sync_and_commit(self, output_length: int, dead_length: int, lines: list[int]) -> None:
        # Durable first, claimed second: a crash between the two only costs a redo.
        for target in self.targets:
            target.sync()
        assert self.journal is not None
        try:
            self.journal.commit(output_length, dead_length, lines)
        except OSError as exc:
            raise SinkFailed(Target("the journal", self.journal.path), exc) from exc

    def _settle(self, commit: Future[None]) -> None:
        self._commit = None
        try:
            commit.result()
        except SinkFailed:
            self._failed = True
            raise

    def close(self, finished: bool) -> None:
        """Write what is left, commit it, and remove the journal if the run finished.

        After a failed write nothing more is committed: the last commit stands, and a
        resume redoes what came after it.
        """
        try:
            if self.opened and not self._failed:
                self._drain(commit=False)
            if self._commit is not None:
                self._settle(self._commit)
            if self.journal is not None and not self._failed:
                if finished:
                    for target in self.targets:
                        target.sync()
                    self.journal.remove()
                else:
                    self._sync_and_commit(self.output.written, self._dead_boundary, self._pending)
                    self._pending = []
        except (SinkFailed, OutputClosed):
            self._failed = True
            raise
        finally:
            if self._commits is not None:
                self._commits.shutdown()
            if self.journal is not None:
                self.journal.close()
            for target in self.targets:
                target.close()

    # -- what to say after a stop ---------------------------------------------------------

    def resume_hint(self, last_line_read: int, failed: bool = False) -> str:
        """How to continue after an early stop so that every result is written exactly once;
        after a ``failed`` run (not one stopped by a signal), once its cause is fixed."""
        then = "once the cause above is fixed, " if failed else ""
        if not self.opened:
            return f"no file was changed; {then}run the same command again"
        if self.journal is not None:
            return f"{then}resume with: {self.command('--resume')}"
        complete = min(self.in_flight) - 1 if self.in_flight else last_line_read
        if self.highest_done == 0:
            return f"nothing was written to the output; {then}run the same command again"
        if self.highest_done > complete:
            return (
                f"there is no exact resume point: lines up to {complete} are complete, but "
                "later lines have results in the output too; give a regular file as --output "
                "(and as input), whose journal makes any stop resumable with --resume"
            )
        hint = f"{then}resume with: {self.command('--skip', str(complete), '--append')}"
        if self.output.path == "-":
            hint += ", appending its output to this run's"
        return hint

    def command(self, *extra: str) -> str:
        """This run's command line, as the user gave it, with ``extra`` options."""
        args = self.args
        words = ["stageflow", "run", args.pipeline]
        if args.input != "-":
            words += ["--input", args.input]
        if args.output != "-":
            words += ["--output", args.output]
        if args.dead_letter:
            words += ["--dead-letter", args.dead_letter]
        options: list[tuple[str, Any, Any]] = [
            ("--max-errors", args.max_errors, 0),
            ("--batch-size", args.batch_size, 256),
            ("--max-in-flight", args.max_in_flight, 8192),
        ]
        if "--skip" not in extra:
            options.append(("--skip", args.skip, 0))
        words += [
            word
            for flag, value, default in options
            if value != default
            for word in (flag, str(value))
        ]
        if args.no_journal:
            words.append("--no-journal")
        words += extra
        text = shlex.join(words)
        if args.input != "-":
            return text
        with contextlib.suppress(OSError):
            source = os.readlink("/proc/self/fd/0")
            if os.path.isfile(source):
                return f"{text} < {shlex.quote(source)}"
        return f"{text} (with the same input on stdin)"


def _regular_or_missing(path: str) -> bool:
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except FileNotFoundError:
        return True
    except OSError:
        return False


def _same_file(fd: int, path: str) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except OSError:
        return False


def _is_regular_fd(fd: int) -> bool:
    try:
        return stat.S_ISREG(os.fstat(fd).st_mode)
    except OSError:
        return False
