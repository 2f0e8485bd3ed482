"""Liveness: stopped and stuck workers, slow setups, skewed versions and orphaned run folders."""

from __future__ import annotations

import json
import logging
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import pytest

from stageflow import EngineError, Pipeline
from stageflow.engine.launcher import SubprocessLauncher
from stageflow.engine.wire import VERSION
from tests.engine.conftest import wait_until
from tests.engine.stages import CountWords, Split
from tests.engine.test_cli_run import count_lines, write_pipeline
from tests.helpers import REPO


def lines(n: int) -> list[dict[str, str]]:
    return [{"id": str(i), "text": "a b"} for i in range(n)]


def start_cli(tmp_path: Path, *args: str) -> tuple[subprocess.Popen[bytes], Path]:
    """`stageflow run ARGS` with its stderr going to a file the test can read as it grows."""
    err = tmp_path / "stderr.log"
    with err.open("wb") as handle:
        proc = subprocess.Popen(
            [sys.executable, "-m", "stageflow", "run", *args],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=handle,
        )
    return proc, err


@pytest.mark.timeout(120)
def test_a_sigstopped_worker_is_lost_and_its_records_go_to_its_peer(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """SIGSTOP of a worker mid-run: it is declared lost, killed, replaced; output is exact."""
    pipeline = Pipeline(
        "stopped",
        [
            {"name": "split", "uses": Split, "workers": 2, "config": {"pause": 0.001}},
            {"name": "count", "uses": CountWords},
        ],
    )
    run = pipeline.run(lines(4000), heartbeat_timeout=1.5)
    ids = []
    stopped_at = None
    with caplog.at_level(logging.INFO, logger="stageflow.engine"):
        for result in run:
            ids.append(result.id)
            if len(ids) == 300:
                victim = next(w for w in run.workers() if "split" in w.stage.split("+"))
                assert victim.pid is not None
                os.kill(victim.pid, signal.SIGSTOP)
                stopped_at = time.monotonic()
    assert stopped_at is not None
    # Without liveness the run would never end; with it, the heartbeat timeout plus the work.
    assert time.monotonic() - stopped_at < 1.5 + 15
    assert Counter(ids) == Counter(str(i) for i in range(4000))
    assert run.report.ok
    lost = [r.getMessage() for r in caplog.records if "sent no heartbeat" in r.getMessage()]
    assert len(lost) == 1 and f"worker {victim.name} (pid {victim.pid})" in lost[0]


@pytest.mark.timeout(180)
def test_a_record_stuck_for_ever_is_reported_and_sigterm_still_ends_the_run(
    tmp_path: Path,
) -> None:
    """process() blocking for ever: the others come out, the log names it, SIGTERM exits 130."""
    total, stuck = 3000, 100
    source = tmp_path / "in.jsonl"
    source.write_text(
        "".join(
            json.dumps({"id": str(i), "text": "zzz" if i == stuck else "a b"}) + "\n"
            for i in range(total)
        )
    )
    pipe = write_pipeline(
        tmp_path / "stuck.yaml",
        [
            {
                "name": "split",
                "uses": "tests.engine.stages:Split",
                "workers": 2,
                "config": {"hang_on": "zzz", "pause": 0.002},
            },
            {"name": "count", "uses": "tests.engine.stages:CountWords"},
        ],
    )
    out, dead = tmp_path / "out.jsonl", tmp_path / "dead.jsonl"
    common = ["-i", str(source), "-o", str(out), "--dead-letter", str(dead)]
    proc, err = start_cli(tmp_path, str(pipe), *common, "--stuck-after", "1", "--stop-timeout", "3")
    line = stuck + 1
    reported = f"the record of input line {line} has been inside process() for"
    assert wait_until(lambda: reported in err.read_text(), timeout=90), err.read_text()
    # The records queued behind the stuck one in its worker were given to the other worker.
    assert wait_until(lambda: count_lines(out) == total - 1, timeout=60), err.read_text()
    signalled = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)
    assert time.monotonic() - signalled < 3 + 2, err.read_text()
    stderr = err.read_text()
    assert proc.returncode == 130, stderr
    last = stderr.strip().splitlines()[-1]
    resume = shlex.split(last.split("resume with: ", 1)[1])
    assert resume[:2] == ["stageflow", "run"] and "--resume" in resume, last
    (entry,) = [json.loads(text) for text in dead.read_text().splitlines()]
    assert entry["line"] == line and entry["error"] == "Stopped", entry
    # Resumed as printed, without the stuck record: every other result exactly once.
    done = subprocess.run(
        [sys.executable, "-m", "stageflow", *resume[1:]],
        cwd=REPO,
        capture_output=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr.decode()
    ids = Counter(json.loads(text)["id"] for text in out.read_text().splitlines())
    assert ids == Counter(str(i) for i in range(total) if i != stuck)


@pytest.mark.timeout(120)
def test_a_stuck_record_with_no_peer_to_take_the_rest_is_not_handed_off(tmp_path: Path) -> None:
    """One worker, stuck: the records behind it are not "given to other workers" there are
    none of, again and again, and the report does not count them twice."""
    source = tmp_path / "in.jsonl"
    source.write_text(
        "".join(
            json.dumps({"id": str(i), "text": "zzz" if i == 3 else "a b"}) + "\n" for i in range(5)
        )
    )
    pipe = write_pipeline(
        tmp_path / "alone.yaml",
        [{"name": "split", "uses": "tests.engine.stages:Split", "config": {"hang_on": "zzz"}}],
    )
    out, report = tmp_path / "out.jsonl", tmp_path / "report.json"
    proc, err = start_cli(
        tmp_path,
        str(pipe),
        *("-i", str(source), "-o", str(out), "--report", str(report)),
        *("--stuck-after", "1", "--stop-timeout", "1", "--dead-letter", str(tmp_path / "d")),
    )
    # Reported twice: a second hand-off, had there been a first, would have happened by now.
    said = "has been inside process() for"
    assert wait_until(lambda: err.read_text().count(said) >= 2, timeout=60), err.read_text()
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=30)
    stderr = err.read_text()
    assert proc.returncode == 130, stderr
    assert "gave the" not in stderr, stderr
    # Only the kill after the stop sends records again: each of the other four at most once.
    numbers = json.loads(report.read_text())
    assert numbers["redeliveries"] <= 4, numbers
    (stage,) = numbers["stages"]
    assert stage["records_in"] <= 5, numbers
    assert sorted(json.loads(text)["id"] for text in out.read_text().splitlines()) == [
        "0",
        "1",
        "2",
        "4",
    ]


def _slow_setup_pipeline(tmp_path: Path) -> tuple[Path, Path]:
    """A one-stage pipeline whose setup() takes 40 s (touching setup.* when it begins), and
    a one-record input for it."""
    pipe = write_pipeline(
        tmp_path / "slow.yaml",
        [
            {
                "name": "load",
                "uses": "tests.engine.stages:SlowSetup",
                "config": {"seconds": 40, "marker": str(tmp_path / "setup")},
            }
        ],
    )
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps({"id": "1", "text": "a"}) + "\n")
    return pipe, source


@pytest.mark.timeout(120)
def test_sigterm_during_a_slow_setup_ends_the_run_within_stop_timeout(tmp_path: Path) -> None:
    """SIGTERM while a stage's setup() takes 40 s ends the run at once with status 130."""
    pipe, source = _slow_setup_pipeline(tmp_path)
    out = tmp_path / "out.jsonl"
    proc, err = start_cli(
        tmp_path, str(pipe), "-i", str(source), "-o", str(out), "--stop-timeout", "2"
    )
    assert wait_until(lambda: list(tmp_path.glob("setup.*")), timeout=60), err.read_text()
    (started,) = tmp_path.glob("setup.*")
    worker = int(started.suffix[1:])
    signalled = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)
    assert time.monotonic() - signalled < 2 + 2, err.read_text()
    assert proc.returncode == 130, err.read_text()
    assert wait_until(lambda: not _alive(worker), timeout=10)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.timeout(120)
def test_a_worker_of_another_wire_version_is_refused_naming_both(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A worker speaking another wire format is refused with one line naming both versions."""
    pipeline = Pipeline("skew", [{"name": "split", "uses": Split}])
    launcher = SubprocessLauncher(target="tests.engine.skewed:run_worker")
    with (
        caplog.at_level(logging.INFO, logger="stageflow.engine"),
        pytest.raises(EngineError, match=f"version 99 and this coordinator version {VERSION};"),
    ):
        list(pipeline.run(lines(3), launcher=launcher, max_start_failures=1))
    refused = [r.getMessage() for r in caplog.records if "refused worker" in r.getMessage()]
    assert len(refused) == 1 and f"version 99 and this coordinator version {VERSION}" in refused[0]


@pytest.mark.timeout(120)
def test_the_next_run_removes_the_folder_of_a_killed_one(tmp_path: Path) -> None:
    """After kill -9 of `stageflow run`, the next run removes the run folder it left."""
    pipe = write_pipeline(
        tmp_path / "p.yaml", [{"name": "split", "uses": "tests.engine.stages:Split"}]
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "stageflow", "run", str(pipe)],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    mine = f"stageflow-{proc.pid}-"
    assert wait_until(
        lambda: any(p.name.startswith(mine) for p in Path(tempfile.gettempdir()).iterdir()),
        timeout=60,
    )
    proc.kill()
    proc.wait()
    assert proc.stdin is not None
    proc.stdin.close()
    (left,) = [p for p in Path(tempfile.gettempdir()).glob(mine + "*")]
    assert left.exists()
    list(Pipeline("next", [{"name": "split", "uses": Split}]).run(lines(1)))
    assert not left.exists()


@pytest.mark.timeout(120)
def test_a_signal_during_the_workers_start_changes_no_file(tmp_path: Path) -> None:
    """SIGINT while setup() runs: the run never began, so yesterday's output and dead letters
    stay byte for byte, no journal is written, and the hint says no file was changed."""
    pipe, source = _slow_setup_pipeline(tmp_path)
    out, dead = tmp_path / "out.jsonl", tmp_path / "dead.jsonl"
    out.write_bytes(b'{"id": "yesterday"}\n' * 10)
    dead.write_bytes(b'{"line": 1}\n' * 3)
    before = out.read_bytes(), dead.read_bytes()
    proc, err = start_cli(
        tmp_path, str(pipe), "-i", str(source), "-o", str(out), "--dead-letter", str(dead)
    )
    assert wait_until(lambda: list(tmp_path.glob("setup.*")), timeout=60), err.read_text()
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=30)
    stderr = err.read_text()
    assert proc.returncode == 130, stderr
    assert (out.read_bytes(), dead.read_bytes()) == before, stderr
    assert not list(tmp_path.glob("out.jsonl.stageflow-journal*")), stderr
    assert (
        stderr.strip().splitlines()[-1].endswith("no file was changed; run the same command again")
    ), stderr


def _parent_of(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as handle:
        return int(handle.read().rsplit(")", 1)[1].split()[1])


def _start_from_stdin(tmp_path: Path) -> tuple[subprocess.Popen[bytes], Path, Path, int]:
    """`stageflow run` of a one-stage pipeline reading stdin; once its worker is up, the
    process, its output and stderr files, and the worker's pid."""
    marker = tmp_path / "setup"
    pipe = write_pipeline(
        tmp_path / "p.yaml",
        [
            {
                "name": "load",
                "uses": "tests.engine.stages:SlowSetup",
                "config": {"seconds": 0, "marker": str(marker)},
            }
        ],
    )
    out, err = tmp_path / "out.jsonl", tmp_path / "stderr.log"
    with err.open("wb") as handle:
        proc = subprocess.Popen(
            [sys.executable, "-m", "stageflow", "run", str(pipe), "-o", str(out)],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stderr=handle,
        )
    assert wait_until(lambda: list(tmp_path.glob("setup.*")), timeout=60), err.read_text()
    (started,) = tmp_path.glob("setup.*")
    return proc, out, err, int(started.suffix[1:])


def _kill_all(proc: subprocess.Popen[bytes], server: int) -> None:
    """Whatever a test left running: the run and a fork server it stopped."""
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    if server and _alive(server):
        os.kill(server, signal.SIGKILL)


def _feed(proc: subprocess.Popen[bytes], first: int, last: int) -> None:
    assert proc.stdin is not None
    proc.stdin.write(b"".join(b'{"id": "%d", "text": "a"}\n' % i for i in range(first, last)))
    proc.stdin.flush()


@pytest.mark.timeout(120)
def test_a_sigstopped_fork_server_does_not_hold_up_the_end_of_a_run(tmp_path: Path) -> None:
    """SIGSTOP of the fork server (its workers' parent, which reports their exits): the run
    still finishes, exits 0 with every result written, and leaves no process behind."""
    proc, out, err, worker = _start_from_stdin(tmp_path)
    server = 0
    try:
        server = _parent_of(worker)
        assert server != proc.pid
        _feed(proc, 0, 50)
        assert wait_until(lambda: count_lines(out) == 50, timeout=60), err.read_text()
        os.kill(server, signal.SIGSTOP)
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=40)
        stderr = err.read_text()
        assert proc.returncode == 0, stderr
        assert count_lines(out) == 50, stderr
        assert wait_until(lambda: not _alive(server) and not _alive(worker), timeout=10)
    finally:
        _kill_all(proc, server)


@pytest.mark.timeout(120)
def test_a_fork_server_sigstopped_mid_run_is_replaced_and_nothing_is_lost(tmp_path: Path) -> None:
    """SIGSTOP of the fork server, then a worker lost: the stopped server, which could fork
    no replacement, is killed and a new one started; every result comes out once."""
    proc, out, err, worker = _start_from_stdin(tmp_path)
    server = 0
    try:
        server = _parent_of(worker)
        _feed(proc, 0, 50)
        assert wait_until(lambda: count_lines(out) == 50, timeout=60), err.read_text()
        os.kill(server, signal.SIGSTOP)
        os.kill(worker, signal.SIGKILL)
        _feed(proc, 50, 100)
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=30)  # not 60 s per worker it asks the stopped server for
        stderr = err.read_text()
        assert proc.returncode == 0, stderr
        assert f"the fork server (pid {server}) is stopped" in stderr, stderr
        ids = Counter(json.loads(line)["id"] for line in out.read_text().splitlines())
        assert ids == Counter(str(i) for i in range(100)), stderr
        assert wait_until(lambda: not _alive(server), timeout=10)
    finally:
        _kill_all(proc, server)


@pytest.mark.timeout(120)
def test_signals_after_the_last_result_do_not_make_a_finished_run_a_stopped_one(
    tmp_path: Path,
) -> None:
    """Both signals while the workers are exiting: exit 0, every result, no resume hint, and
    the second one ends the wait for the workers at once."""
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"id": str(i), "text": "a"}) + "\n" for i in range(20)))
    marker = tmp_path / "exiting"
    pipe = write_pipeline(
        tmp_path / "linger.yaml",
        [
            {
                "name": "relay",
                "uses": "tests.engine.stages:SlowSetup",
                "config": {"seconds": 0, "exit_seconds": 90, "exit_marker": str(marker)},
            }
        ],
    )
    out = tmp_path / "out.jsonl"
    proc, err = start_cli(
        tmp_path, str(pipe), "-i", str(source), "-o", str(out), "--stop-timeout", "80"
    )
    assert wait_until(lambda: list(tmp_path.glob("exiting.*")), timeout=60), err.read_text()
    proc.send_signal(signal.SIGINT)
    assert wait_until(lambda: "received SIGINT" in err.read_text(), timeout=30), err.read_text()
    signalled = time.monotonic()
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=60)
    stderr = err.read_text()
    assert time.monotonic() - signalled < 20, stderr
    assert proc.returncode == 0, stderr
    assert "resume" not in stderr and "error" not in stderr, stderr
    assert count_lines(out) == 20
    assert not list(tmp_path.glob("out.jsonl.stageflow-journal*")), stderr
