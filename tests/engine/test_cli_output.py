"""The output side of `stageflow run`: closed pipes, full disks, untouched files, the journal.

Every test runs the real command in its own interpreter and counts every record.
"""

from __future__ import annotations

import contextlib
import json
import random
import re
import resource
import shlex
import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from tests.engine.conftest import wait_until
from tests.engine.test_cli_run import count_lines, split_pipeline, write_lines, write_pipeline
from tests.helpers import REPO, read_stderr_until, run_stageflow

JOURNAL = ".stageflow-journal"


def start(*args: str, **popen: object) -> subprocess.Popen[bytes]:
    popen.setdefault("stdout", subprocess.DEVNULL)
    popen.setdefault("stderr", subprocess.PIPE)
    return subprocess.Popen(  # type: ignore[call-overload, no-any-return]
        [sys.executable, "-m", "stageflow", "run", *args], cwd=REPO, **popen
    )


def ids_in(path: Path) -> Counter[str]:
    return Counter(json.loads(line)["id"] for line in path.read_text().splitlines())


def lines_in(path: Path) -> Counter[int]:
    return Counter(json.loads(line)["line"] for line in path.read_text().splitlines())


def printed_command(stderr: str) -> list[str]:
    """The resume command on stderr's last line, as argv for this interpreter."""
    last = stderr.strip().splitlines()[-1]
    words = shlex.split(last.split("resume with: ", 1)[1])
    assert words[:2] == ["stageflow", "run"], last
    return [sys.executable, "-m", "stageflow", *words[1:]]


def with_bad_lines(path: Path, n: int, every: int) -> Path:
    """``n`` lines of which every ``every``-th is not JSON (line numbers are 1-based)."""
    write_lines(path, n)
    lines = path.read_text().splitlines()
    for index in range(every - 1, n, every):
        lines[index] = f"not json {index + 1}"
    path.write_text("\n".join(lines) + "\n")
    return path


def slow_pipeline(tmp_path: Path, pause: float = 0.002) -> Path:
    """Three split workers, so results come out in an order other than the input's."""
    return write_pipeline(
        tmp_path / "slow.yaml",
        [
            {
                "name": "split",
                "uses": "tests.engine.stages:Split",
                "workers": 3,
                "config": {"pause": pause},
            },
            {"name": "count", "uses": "tests.engine.stages:CountWords", "workers": 2},
        ],
    )


def proc_ended(proc: subprocess.Popen[bytes]) -> Callable[[], bool]:
    return lambda: proc.poll() is not None


def test_closed_output_pipe_exits_141_and_stops_reading(tmp_path: Path) -> None:
    """A reader that leaves (`| head -1`) ends the run with 141 while input is still open."""
    proc = start(str(split_pipeline(tmp_path)), stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None
    stop = threading.Event()

    def feed() -> None:  # an input that never ends: only stageflow can end the run
        line = json.dumps({"id": "x", "text": "a b"}).encode() + b"\n"
        try:
            while not stop.is_set():
                proc.stdin.write(line * 100)  # type: ignore[union-attr]
                proc.stdin.flush()  # type: ignore[union-attr]
        except (BrokenPipeError, ValueError):
            pass

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    try:
        assert json.loads(proc.stdout.readline())["id"] == "x"
        proc.stdout.close()
        assert proc.wait(timeout=60) == 141
    finally:
        stop.set()
        proc.kill()
        proc.wait()
    writer.join(timeout=10)
    with contextlib.suppress(BrokenPipeError):
        proc.stdin.close()
    assert proc.stderr is not None
    stderr = proc.stderr.read().decode()
    proc.stderr.close()
    assert "Traceback" not in stderr and "error" not in stderr, stderr


def test_full_disk_on_output_is_one_line_and_status_4(tmp_path: Path) -> None:
    """ENOSPC on --output: one error line naming the file, exit 4, and a true way on."""
    source = write_lines(tmp_path / "in.jsonl", 300)
    done = run_stageflow("run", str(split_pipeline(tmp_path)), "-i", str(source), "-o", "/dev/full")
    assert done.returncode == 4, done.stderr
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if "error:" in line]
    assert errors[0] == (
        "stageflow: error: cannot write the output file '/dev/full': "
        "No space left on device (ENOSPC)"
    )
    assert errors[1:] == [
        "stageflow: error: nothing was written to the output; once the cause above is fixed, "
        "run the same command again"
    ]
    summary = done.stderr.splitlines()[-2]
    assert summary.startswith("stageflow: pipeline "), summary
    assert written_in(summary) == 0, summary  # the results handed over but lost not counted


def test_full_disk_on_dead_letters_is_one_line_and_status_4(tmp_path: Path) -> None:
    """ENOSPC on --dead-letter: one line naming that file, exit 4; the output resumes exactly."""
    source = with_bad_lines(tmp_path / "in.jsonl", 300, every=10)
    out = tmp_path / "out.jsonl"
    pipe = split_pipeline(tmp_path)
    done = run_stageflow(
        "run", str(pipe), "-i", str(source), "-o", str(out), "--dead-letter", "/dev/full"
    )
    assert done.returncode == 4, done.stderr
    assert "Traceback" not in done.stderr
    assert (
        "stageflow: error: cannot write the dead-letter file '/dev/full': "
        "No space left on device (ENOSPC)"
    ) in done.stderr.splitlines()
    assert sum(ids_in(out).values()) == len(ids_in(out))  # no result written twice
    (summary,) = [line for line in done.stderr.splitlines() if line.startswith("stageflow: pipe")]
    assert written_in(summary) == sum(ids_in(out).values()), summary


def written_in(summary: str) -> int:
    """The count of results a run's summary line says it wrote."""
    found = re.search(r"(\d+) results? written", summary)
    assert found is not None, summary
    return int(found.group(1))


def test_a_run_that_fails_to_start_changes_no_file(tmp_path: Path) -> None:
    """A failing setup() or a bad path leaves existing output and dead letters byte-identical."""
    out, dead = tmp_path / "out.jsonl", tmp_path / "dead.jsonl"
    out.write_bytes(b'{"id": "yesterday"}\n' * 100)
    dead.write_bytes(b'{"line": 1}\n' * 10)
    before = out.read_bytes(), dead.read_bytes()
    source = write_lines(tmp_path / "in.jsonl", 20)
    broken = write_pipeline(
        tmp_path / "broken.yaml", [{"name": "ner", "uses": "tests.engine.stages:BrokenSetup"}]
    )
    files = ("-o", str(out), "--dead-letter", str(dead))
    done = run_stageflow("run", str(broken), "-i", str(source), *files)
    assert done.returncode == 3, done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        "stageflow: error: no file was changed; once the cause above is fixed, "
        "run the same command again"
    )
    bad_path = ("-o", str(out), "--dead-letter", str(tmp_path / "missing" / "dead.jsonl"))
    missing = run_stageflow("run", str(split_pipeline(tmp_path)), "-i", str(source), *bad_path)
    assert missing.returncode == 2, missing.stderr
    assert "its folder" in missing.stderr and "does not exist" in missing.stderr
    assert (out.read_bytes(), dead.read_bytes()) == before
    assert not (tmp_path / f"out.jsonl{JOURNAL}").exists()


def journal_state(path: Path) -> tuple[int, int]:
    """The journal's inode (a run replaces the file when it starts) and its commit lines."""
    try:
        return path.stat().st_ino, path.read_bytes().count(b"\n") - 1
    except FileNotFoundError:
        return 0, 0


def wait_for_commit(proc: subprocess.Popen[bytes], journal: Path, old_inode: int) -> None:
    """Wait until the run made its own journal (a new file) and committed to it, or ended."""
    ended = proc_ended(proc)

    def committed() -> bool:
        inode, commits = journal_state(journal)
        return inode != old_inode and commits >= 2  # beyond the commit it starts with

    assert wait_until(lambda: committed() or ended(), timeout=90)


def test_kill_9_five_times_then_resume_gives_every_result_once(tmp_path: Path) -> None:
    """kill -9 of `stageflow run` at random moments, 5 times, each --resume'd: exactly once."""
    n = 6_000  # enough that the fifth resumed run still has work left when it is killed
    source = with_bad_lines(tmp_path / "in.jsonl", n, every=97)
    out, dead = tmp_path / "out.jsonl", tmp_path / "dead.jsonl"
    journal = tmp_path / f"out.jsonl{JOURNAL}"
    args = [str(slow_pipeline(tmp_path, pause=0.008)), "-i", str(source), "-o", str(out)]
    args += ["--dead-letter", str(dead), "--max-errors", str(n)]
    chance = random.Random()
    for attempt in range(5):
        before, _ = journal_state(journal)
        proc = start(*args, *(["--resume"] if attempt else []), stderr=subprocess.DEVNULL)
        # A random moment after this run committed progress of its own, so that each
        # resume has more to skip.
        wait_for_commit(proc, journal, before)
        wait_until(proc_ended(proc), timeout=chance.uniform(0.0, 1.0))
        assert proc.poll() is None, f"run {attempt + 1} ended before its kill: slow it down"
        proc.kill()
        proc.wait()
        assert journal.exists()
    done = run_stageflow("run", *args, "--resume", timeout=120)
    assert done.returncode == 0, done.stderr
    assert not journal.exists()
    results = ids_in(out)
    bad = {str(i - 1) for i in range(97, n + 1, 97)}
    assert results == Counter({str(i): 1 for i in range(n) if str(i) not in bad})
    assert lines_in(dead) == Counter({i: 1 for i in range(97, n + 1, 97)})


def test_second_signal_then_printed_resume_gives_every_result_once(tmp_path: Path) -> None:
    """After two SIGINTs, stderr ends with the summary and a command that completes the run."""
    n = 3_000
    source = with_bad_lines(tmp_path / "in.jsonl", n, every=101)
    out, dead = tmp_path / "out.jsonl", tmp_path / "dead.jsonl"
    args = [str(slow_pipeline(tmp_path)), "-i", str(source), "-o", str(out)]
    args += ["--dead-letter", str(dead), "--max-errors", str(n)]
    proc = start(*args)
    assert wait_until(lambda: count_lines(out) > 100, timeout=90)
    proc.send_signal(signal.SIGINT)
    read_stderr_until(proc, b"received SIGINT")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    stderr = err.decode()
    assert proc.returncode == 130, stderr
    assert stderr.splitlines()[-2].startswith("stageflow: pipeline ")  # the summary
    assert "stopped at once on a second signal; resume with: " in stderr.splitlines()[-1]
    command = printed_command(stderr)
    assert command[-1] == "--resume"
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    bad = {str(i - 1) for i in range(101, n + 1, 101)}
    assert ids_in(out) == Counter({str(i): 1 for i in range(n) if str(i) not in bad})
    assert lines_in(dead) == Counter({i: 1 for i in range(101, n + 1, 101)})


def test_resume_checks_the_journal_and_a_finished_run_removes_it(tmp_path: Path) -> None:
    """--resume refuses another input or pipeline in one line; the right one finishes the run."""
    n = 3_000
    source = write_lines(tmp_path / "in.jsonl", n)
    out = tmp_path / "out.jsonl"
    journal = tmp_path / f"out.jsonl{JOURNAL}"
    pipe = slow_pipeline(tmp_path)
    proc = start(str(pipe), "-i", str(source), "-o", str(out))
    assert wait_until(lambda: count_lines(out) > 100, timeout=90)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err.decode()
    assert journal.exists()
    command = printed_command(err.decode())

    other = write_lines(tmp_path / "other.jsonl", n, start=1)
    refused = run_stageflow("run", str(pipe), "-i", str(other), "-o", str(out), "--resume")
    assert refused.returncode == 2
    assert refused.stderr.count("\n") == 1, refused.stderr
    assert "belongs to another run (the input differs" in refused.stderr
    changed = write_pipeline(tmp_path / "changed.yaml", json.loads(pipe.read_text())["stages"])
    refused = run_stageflow("run", str(changed), "-i", str(source), "-o", str(out), "--resume")
    assert refused.returncode == 2 and "the pipeline file's content differs" in refused.stderr

    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert ids_in(out) == Counter({str(i): 1 for i in range(n)})
    assert not journal.exists()
    again = run_stageflow("run", str(pipe), "-i", str(source), "-o", str(out), "--resume")
    assert again.returncode == 2 and "there is no journal" in again.stderr


def test_workers_that_cannot_restart_end_with_the_summary_and_a_resume(tmp_path: Path) -> None:
    """A storm of failed restarts: the cause, the summary, then a resume that completes once."""
    n = 3_000
    source = write_lines(tmp_path / "in.jsonl", n)
    lines = source.read_text().splitlines()
    lines[1_500] = json.dumps({"id": "1500", "text": "die"})
    source.write_text("\n".join(lines) + "\n")
    marker = tmp_path / "died"
    pipe = write_pipeline(
        tmp_path / "doomed.yaml",
        [
            {
                # One worker of its own: once it dies no peer can carry on, so the run ends.
                "name": "doomed",
                "uses": "tests.engine.stages:Doomed",
                "workers": 1,
                "fuse": False,
                "config": {"marker": str(marker)},
            },
            {"name": "split", "uses": "tests.engine.stages:Split", "workers": 2},
            {"name": "count", "uses": "tests.engine.stages:CountWords"},
        ],
    )
    out = tmp_path / "out.jsonl"
    done = run_stageflow("run", str(pipe), "-i", str(source), "-o", str(out), timeout=120)
    assert done.returncode == 3, done.stderr
    stderr = done.stderr.strip().splitlines()
    assert "the device this stage needs is gone" in done.stderr  # the error "above" is there
    assert "the workers of stage 'doomed' failed to start 3 times" in stderr[-3]
    assert stderr[-2].startswith("stageflow: pipeline ")
    command = printed_command(done.stderr)
    (tmp_path / "died.fixed").touch()
    resumed = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert ids_in(out) == Counter({str(i): 1 for i in range(n)})


def limit_file_size(size: int) -> Callable[[], None]:
    """For Popen: files may not grow past ``size`` bytes; a write beyond fails with EFBIG."""

    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # an error, not a kill

    return apply


def test_a_failed_write_to_a_regular_output_resumes_from_the_journal(tmp_path: Path) -> None:
    """A write error on --output FILE is one line, exit 4, and a printed resume that completes."""
    n = 3_000
    source = write_lines(tmp_path / "in.jsonl", n)
    out = tmp_path / "out.jsonl"
    proc = start(
        str(slow_pipeline(tmp_path)),
        "-i",
        str(source),
        "-o",
        str(out),
        preexec_fn=limit_file_size(40_000),
    )
    _, err = proc.communicate(timeout=120)
    stderr = err.decode()
    assert proc.returncode == 4, stderr
    assert "Traceback" not in stderr
    assert (
        f"stageflow: error: cannot write the output file {str(out)!r}: File too large (EFBIG)"
        in (stderr.splitlines())
    )
    assert out.stat().st_size <= 40_000
    done = subprocess.run(
        printed_command(stderr), cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert ids_in(out) == Counter({str(i): 1 for i in range(n)})
