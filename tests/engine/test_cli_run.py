"""`stageflow run` as users run it: real files, pipes, signals and exit statuses."""

from __future__ import annotations

import codecs
import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

import psutil
import pytest

from stageflow.cli import SHARED
from tests.engine.conftest import wait_until
from tests.helpers import REPO, read_stderr_until, run_stageflow

SEED = REPO / "examples" / "seed"


def write_pipeline(path: Path, stages: list[dict]) -> Path:  # type: ignore[type-arg]
    path.write_text(json.dumps({"name": path.stem, "stages": stages}))  # JSON is YAML too
    return path


def write_lines(path: Path, n: int, start: int = 0) -> Path:
    with path.open("w") as handle:
        for i in range(start, start + n):
            handle.write(json.dumps({"id": str(i), "text": "a b c"[: 1 + 2 * (i % 3)]}) + "\n")
    return path


def split_pipeline(tmp_path: Path, **split: object) -> Path:
    return write_pipeline(
        tmp_path / "pipe.yaml",
        [
            {"name": "split", "uses": "tests.engine.stages:Split", "workers": 2, **split},
            {"name": "count", "uses": "tests.engine.stages:CountWords"},
        ],
    )


def test_seed_main_job_on_bundled_sample(tmp_path: Path) -> None:
    """The README's main job writes one result per sample record and exits 0."""
    out = tmp_path / "out.jsonl"
    done = run_stageflow(
        "run", str(SEED / "pipeline.yaml"), "--input", str(SEED / "sample.jsonl"), "-o", str(out)
    )
    assert done.returncode == 0, done.stderr
    ids = [json.loads(line)["id"] for line in out.read_text().splitlines()]
    assert len(ids) == len(set(ids)) == 2000
    assert "2000 of 2000 input records processed" in done.stderr
    assert "collected 2000 results" in done.stderr  # the collector's own summary


def test_stdin_to_stdout(tmp_path: Path) -> None:
    """Without --input/--output the command reads stdin and writes stdout."""
    data = "".join(json.dumps({"id": str(i), "text": "x y"}) + "\n" for i in range(10))
    done = subprocess.run(
        [sys.executable, "-m", "stageflow", "run", str(split_pipeline(tmp_path))],
        input=data,
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert sorted(json.loads(line)["id"] for line in done.stdout.splitlines()) == sorted(
        str(i) for i in range(10)
    )


def test_bad_records_go_to_the_dead_letter_file(tmp_path: Path) -> None:
    """Bad lines are dead-lettered with line, stage and reason; exit 1; no traceback."""
    source = tmp_path / "in.jsonl"
    source.write_text(
        '{"id": "1", "text": "ok"}\n'
        "not json\n"
        "\n"
        '{"id": "4"}\n'
        '{"id": "5", "text": "boom"}\n'
        '{"id": "6", "text": "fine too"}\n'
    )
    dead = tmp_path / "dead.jsonl"
    out = tmp_path / "out.jsonl"
    pipe = split_pipeline(tmp_path, config={"fail_on": "boom"})
    args = ("run", str(pipe), "-i", str(source), "-o", str(out), "--dead-letter", str(dead))
    done = run_stageflow(*args)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert "3 records were dead-lettered" in done.stderr
    assert sorted(json.loads(line)["id"] for line in out.read_text().splitlines()) == ["1", "6"]
    entries = {e["line"]: e for e in map(json.loads, dead.read_text().splitlines())}
    assert sorted(entries) == [2, 4, 5]
    assert entries[2]["record"] == "not json" and entries[2]["stage"] == "split"
    assert entries[4]["errors"][0]["type"] == "missing"
    assert entries[5]["error"] == "RuntimeError" and entries[5]["record"]["text"] == "boom"

    allowed = run_stageflow(*args, "--max-errors", "3")
    assert allowed.returncode == 0, allowed.stderr


def test_invalid_pipeline_exits_2_before_starting(tmp_path: Path) -> None:
    """An unknown stage is one line on stderr and exit status 2."""
    pipe = write_pipeline(tmp_path / "p.yaml", [{"name": "x", "uses": "no-such-stage"}])
    done = run_stageflow("run", str(pipe), "-i", os.devnull)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "unknown stage 'no-such-stage'" in done.stderr


def test_unwritable_dead_letter_path_exits_2(tmp_path: Path) -> None:
    """A --dead-letter path that cannot be opened is one clear line and exit status 2."""
    source = write_lines(tmp_path / "in.jsonl", 3)
    bad = tmp_path / "no-such-dir" / "dead.jsonl"
    done = run_stageflow(
        "run", str(split_pipeline(tmp_path)), "-i", str(source), "--dead-letter", str(bad)
    )
    assert done.returncode == 2, done.stderr
    assert "cannot open" in done.stderr and "Traceback" not in done.stderr


def test_missing_output_folder_says_it_is_the_output(tmp_path: Path) -> None:
    """--output into a missing folder names the output file and the fix, exit 2."""
    source = write_lines(tmp_path / "in.jsonl", 3)
    out = tmp_path / "no-such-dir" / "out.jsonl"
    done = run_stageflow("run", str(split_pipeline(tmp_path)), "-i", str(source), "-o", str(out))
    assert done.returncode == 2, done.stderr
    assert done.stderr == (
        f"stageflow: error: cannot open the output file '{out}': its folder "
        f"'{out.parent}' does not exist; create it or choose another path\n"
    )


def test_one_dead_letter_without_a_file_verbose_after_the_subcommand(tmp_path: Path) -> None:
    """One dead letter is "1 record was", the message says where the reason went, and -v
    after the subcommand logs worker starts and exits; -q there hides the summary."""
    source = tmp_path / "in.jsonl"
    source.write_text('{"id": "1", "text": "ok"}\n{"id": "2"}\n')
    pipe = split_pipeline(tmp_path)
    done = run_stageflow("run", str(pipe), "-i", str(source), "-o", os.devnull, "-v")
    assert done.returncode == 1, done.stderr
    assert (
        "stageflow: error: 1 record was dead-lettered (allowed: 0); each reason was logged as "
        "a warning; --dead-letter PATH (dead_letter= in Python) keeps them in a file"
    ) in done.stderr.splitlines()
    assert "dead-lettered (line 2, stage split): ValidationError" in done.stderr
    assert done.stderr.count("stageflow: started worker ") == 3
    assert done.stderr.count("exited with status 0") == 3
    quiet = run_stageflow("run", str(pipe), "-i", str(source), "-o", os.devnull, "-q")
    assert quiet.returncode == 1
    assert "input records processed" not in quiet.stderr and "started worker" not in quiet.stderr


def test_missing_input_file_exits_2(tmp_path: Path) -> None:
    """A missing input file is one clear line and exit status 2."""
    done = run_stageflow("run", str(split_pipeline(tmp_path)), "-i", str(tmp_path / "nope"))
    assert done.returncode == 2 and "cannot open" in done.stderr and "Traceback" not in done.stderr


def test_failing_setup_exits_3_with_the_reason(tmp_path: Path) -> None:
    """A stage whose setup() raises stops the run with status 3 and the stage's own message."""
    pipe = write_pipeline(
        tmp_path / "p.yaml", [{"name": "ner", "uses": "tests.engine.stages:BrokenSetup"}]
    )
    done = run_stageflow("run", str(pipe), "-i", str(write_lines(tmp_path / "in.jsonl", 5)))
    assert done.returncode == 3, done.stderr
    assert "the model file models/ner.bin is missing" in done.stderr
    assert "failed to start 3 times" in done.stderr and "Traceback" not in done.stderr


def test_installed_plugin_runs_through_its_entry_point(
    tmp_path: Path, wordcount_plugin_path: Path
) -> None:
    """A plugin installed with pip is found through its entry point and runs."""
    pipe = write_pipeline(tmp_path / "wc.yaml", [{"name": "wc", "uses": "wordcount", "workers": 2}])
    source = tmp_path / "in.jsonl"
    source.write_text(
        "".join(json.dumps({"id": str(i), "text": "a " * i}) + "\n" for i in range(20))
    )
    out = tmp_path / "out.jsonl"
    done = run_stageflow(
        "run", str(pipe), "-i", str(source), "-o", str(out), pythonpath=[wordcount_plugin_path]
    )
    assert done.returncode == 0, done.stderr
    counts = {r["id"]: r["words"] for r in map(json.loads, out.read_text().splitlines())}
    assert counts == {str(i): i for i in range(20)}


def start_run(tmp_path: Path, *args: str, stdin: int | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "stageflow", "run", *args],
        cwd=REPO,
        stdin=stdin,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def lines_with(stream: IO[bytes], needle: bytes, count: int, timeout: float) -> bool:
    """Read ``stream`` until ``count`` lines hold ``needle``; False if ``timeout`` passes first."""
    deadline = time.monotonic() + timeout
    seen, buffer = 0, b""
    while seen < count:
        readable, _, _ = select.select([stream], [], [], max(0.0, deadline - time.monotonic()))
        chunk = os.read(stream.fileno(), 65536) if readable else b""
        if not chunk:
            return False
        *lines, buffer = (buffer + chunk).split(b"\n")
        seen += sum(needle in line for line in lines)
    return True


def count_lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def test_sigterm_drains_and_tells_where_to_resume(tmp_path: Path) -> None:
    """SIGTERM finishes what is in flight, exits 130; without a journal --skip loses nothing."""
    source = write_lines(tmp_path / "in.jsonl", 20_000)
    pipe = split_pipeline(tmp_path, config={"pause": 0.0005})
    out = tmp_path / "out.jsonl"
    proc = start_run(tmp_path, str(pipe), "-i", str(source), "-o", str(out), "--no-journal")
    assert wait_until(lambda: count_lines(out) > 500, timeout=60)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    stderr = err.decode()
    assert proc.returncode == 130, stderr
    resume = stderr.split("resume with: ")[1].split()
    assert resume[-4] == "--no-journal" and resume[-3] == "--skip" and resume[-1] == "--append"
    skip = int(resume[-2])
    assert 500 < skip < 20_000
    first = {json.loads(line)["id"] for line in out.read_text().splitlines()}
    assert first == {str(i) for i in range(skip)}
    done = run_stageflow("run", str(pipe), "-i", str(source), "-o", str(out), *resume[-4:])
    assert done.returncode == 0, done.stderr
    ids = [json.loads(line)["id"] for line in out.read_text().splitlines()]
    assert sorted(ids, key=int) == [str(i) for i in range(20_000)]


def test_second_signal_stops_at_once(tmp_path: Path) -> None:
    """A second SIGINT abandons the drain and exits 130 promptly."""
    source = write_lines(tmp_path / "in.jsonl", 2_000)
    pipe = split_pipeline(tmp_path, config={"pause": 0.05})
    out = tmp_path / "out.jsonl"
    proc = start_run(tmp_path, str(pipe), "-i", str(source), "-o", str(out))
    assert wait_until(lambda: count_lines(out) > 0, timeout=60)
    proc.send_signal(signal.SIGINT)
    seen = read_stderr_until(proc, b"received SIGINT")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=15)
    assert proc.returncode == 130, (seen + err).decode()
    assert "stopped at once" in err.decode()


def test_workers_exit_when_the_parent_is_killed(tmp_path: Path) -> None:
    """kill -9 of `stageflow run` leaves no worker behind, idle or stuck inside process()."""
    marker = tmp_path / "hanging"
    pipe = split_pipeline(tmp_path, config={"hang_on": "zzz", "hang_marker": str(marker)})
    proc = start_run(tmp_path, str(pipe), "-v", stdin=subprocess.PIPE)
    parent = psutil.Process(proc.pid)
    # Three workers and the fork server they came from.
    assert wait_until(lambda: len(parent.children(recursive=True)) == 4, timeout=60)
    workers = parent.children(recursive=True)
    # Records flow once one worker of each stage is ready: wait for all three, so that the
    # two records go one to each split worker.
    assert proc.stdin is not None and proc.stderr is not None
    assert lines_with(proc.stderr, b" is ready, ", 3, timeout=60)
    proc.stdin.write(b'{"id": "1", "text": "zzz"}\n{"id": "2", "text": "zzz"}\n')
    proc.stdin.flush()
    # Wait until both split workers are stuck in process(): only the kernel can tell them.
    assert wait_until(lambda: len(list(tmp_path.glob("hanging.*"))) == 2, timeout=30)
    proc.kill()
    proc.wait()
    proc.stdin.close()
    assert proc.stderr is not None
    proc.stderr.close()
    _, alive = psutil.wait_procs(workers, timeout=10)
    assert not alive


def test_the_fork_server_is_started_before_the_pipeline_is_read(tmp_path: Path) -> None:
    """stageflow run starts its fork server before it reads the pipeline: the process every
    worker is a child of was already the CLI's child when the CLI imported the stage module."""
    pipeline = tmp_path / "probe.yaml"
    pipeline.write_text(
        "name: probe\nstages:\n  - name: who\n    uses: tests.engine.early_probe:WhoseChild\n"
        "    workers: 2\n"
    )
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"id": str(n), "text": "x"}) + "\n" for n in range(20)))
    out, notes = tmp_path / "out.jsonl", tmp_path / "notes.jsonl"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["STAGEFLOW_TEST_NOTES"] = str(notes)
    command = [sys.executable, "-m", "stageflow", "run", str(pipeline), "-i", str(source)]
    cli = subprocess.Popen(
        [*command, "-o", str(out)], cwd=REPO, env=env, stderr=subprocess.PIPE, text=True
    )
    _, stderr = cli.communicate(timeout=60)
    assert cli.returncode == 0, stderr
    parents = {json.loads(line)["ppid"] for line in out.read_text().splitlines()}
    assert len(out.read_text().splitlines()) == 20
    assert len(parents) == 1 and cli.pid not in parents  # one fork server, not the CLI itself
    (cli_note,) = [
        note for note in map(json.loads, notes.read_text().splitlines()) if note["pid"] == cli.pid
    ]
    assert parents <= set(cli_note["children"])


SHARED_PROBE = """
import json, sys
from stageflow.cli import SHARED, start_engine
launcher = start_engine(["run", "pipeline.yaml"])
server, me = (open(f"/proc/{pid}/cmdline", "rb").read() for pid in (launcher.server_pid, "self"))
print(json.dumps({"forked": server == me, "shared": [m for m in SHARED if m in sys.modules],
                  "argparse": "argparse" in sys.modules}))
launcher.close()
"""


def test_the_cli_forks_its_server_holding_what_both_import_and_no_parser() -> None:
    """stageflow run forks its fork server once the modules both processes need are
    imported (so each is imported once, not in both), and before argparse, which only the
    CLI needs."""
    probe = subprocess.run(
        [sys.executable, "-c", SHARED_PROBE], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert probe.returncode == 0, probe.stderr
    facts = json.loads(probe.stdout)
    assert facts == {"forked": True, "shared": list(SHARED), "argparse": False}


def test_a_file_and_a_pipe_give_the_same_numbered_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Input lines are numbered as the file counts them, blank ones (empty, spaces, tabs,
    CRLF) dropped and a BOM cut off the first, whether read a block at a time (a file, here
    in blocks of a few lines) or line by line (a pipe)."""
    from stageflow.cli import run

    data = codecs.BOM_UTF8 + b"".join(
        [b'{"n":1}\r\n', b"\n", b"  \t\r\n", b'{"n":4}\n', b" \x0b\x0c\n"] * 40 + [b'{"n":"end"}']
    )
    monkeypatch.setattr(run, "_BLOCK_BYTES", 30)  # blocks end inside the blank lines too
    path = tmp_path / "in.jsonl"
    path.write_bytes(data)
    with path.open("rb") as source:
        lines = run._lines(source, 0, None, None)
        assert source.tell() == 0  # nothing read before a line is asked for
        assert next(lines) == (1, b'{"n":1}')
        assert source.tell() <= 64  # a block, not the file: the progress display reads tell()
        from_file = [(1, b'{"n":1}'), *lines]
    reader, writer = os.pipe()
    os.write(writer, data)
    os.close(writer)
    with os.fdopen(reader, "rb") as pipe:
        from_pipe = list(run._lines(pipe, 0, None, None))
    assert from_file == from_pipe
    assert from_file[:3] == [(1, b'{"n":1}'), (4, b'{"n":4}'), (6, b'{"n":1}')]
    assert len(from_file) == 81 and from_file[-1] == (201, b'{"n":"end"}')


@pytest.mark.parametrize("flag", ["--heartbeat-timeout", "--stop-timeout", "--stuck-after"])
@pytest.mark.parametrize("value", ["inf", "1e300"])
def test_seconds_beyond_any_clock_are_refused_in_one_line(
    tmp_path: Path, flag: str, value: str
) -> None:
    """inf or 1e300 seconds would overflow poll() and lock waits: status 2, no traceback."""
    source = write_lines(tmp_path / "in.jsonl", 5)
    out = tmp_path / "out.jsonl"
    done = run_stageflow(
        "run", str(split_pipeline(tmp_path)), "-i", str(source), "-o", str(out), flag, value
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert f"{value} is not a number of seconds above 0 and at most 1000000" in done.stderr
    assert not out.exists()


@pytest.mark.parametrize("option", ["heartbeat_timeout", "stop_timeout", "stuck_after"])
def test_run_refuses_seconds_beyond_any_clock(option: str) -> None:
    """The embedding API says which option, before any worker starts."""
    from stageflow import Pipeline
    from tests.engine.stages import Split

    pipeline = Pipeline("p", [{"name": "split", "uses": Split}])
    with pytest.raises(ValueError, match=f"^{option} is inf; give a number of seconds"):
        pipeline.run([], **{option: float("inf")})
