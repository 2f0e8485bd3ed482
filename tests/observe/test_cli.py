"""`stageflow run` observed as users see it: a real terminal, a pipe, metrics, the report."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import signal
import stat
import struct
import subprocess
import sys
import termios
import threading
import time
import urllib.request
from pathlib import Path

import jsonschema
from prometheus_client.parser import text_string_to_metric_families

from tests.engine.conftest import wait_until
from tests.engine.test_cli_run import split_pipeline, write_lines

# The pipelines here are unfused (fuse=False on split), so that each stage has workers of
# its own to show; a fused group's display is covered in tests/engine/test_fusion.py.
from tests.helpers import REPO, run_stageflow

SCHEMA = json.loads((REPO / "schemas" / "run-report.schema.json").read_text())
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def on_terminal(args: list[str], *, stdout_too: bool = False) -> tuple[int, str]:
    """Run the CLI with stderr (and maybe stdout) on a real pseudo-terminal; return its text."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    proc = subprocess.Popen(
        [sys.executable, "-m", "stageflow", *args],
        stdin=subprocess.DEVNULL,
        stdout=slave if stdout_too else subprocess.DEVNULL,
        stderr=slave,
        cwd=REPO,
        env=ENV,
    )
    os.close(slave)
    chunks = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: every writer of the terminal has closed it
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    return proc.wait(timeout=30), b"".join(chunks).decode("utf-8", "replace")


def test_live_display_on_a_terminal_keeps_the_output_intact(tmp_path: Path) -> None:
    """On a pty the live display shows counts and rate per stage; the output file is whole."""
    source = write_lines(tmp_path / "in.jsonl", 300)
    out = tmp_path / "out.jsonl"
    pipe = split_pipeline(tmp_path, fuse=False, config={"pause": 0.002})
    status, screen = on_terminal(["run", str(pipe), "-i", str(source), "-o", str(out)])
    assert status == 0, screen
    assert "\x1b[" in screen  # drawn live, in place
    assert "read 300" in screen and "written 300" in screen and "rec/s" in screen
    assert re.search(r"split\s+2/2\s+300\s+\d+%", screen), screen
    assert "ETA" in screen or "input 100%" in screen
    ids = [json.loads(line)["id"] for line in out.read_text().splitlines()]
    assert sorted(ids) == sorted(str(i) for i in range(300))


def test_results_on_the_same_terminal_get_plain_lines_only(tmp_path: Path) -> None:
    """With results on stdout on the same terminal, no live redraw ever cuts a result line."""
    source = write_lines(tmp_path / "in.jsonl", 200)
    pipe = split_pipeline(tmp_path, fuse=False)
    status, screen = on_terminal(["run", str(pipe), "-i", str(source)], stdout_too=True)
    assert status == 0, screen
    assert "\x1b[" not in screen
    lines = screen.replace("\r\n", "\n").splitlines()
    results = [json.loads(line) for line in lines if line.startswith("{")]
    assert len(results) == 200 and all(line.startswith(("{", "stageflow")) for line in lines)
    assert any(line.startswith("stageflow: progress: read 200") for line in lines)


def test_not_a_terminal_gives_plain_lines_without_escape_codes(tmp_path: Path) -> None:
    """stderr on a pipe: periodic plain progress lines in the log, and no escape code at all."""
    source = write_lines(tmp_path / "in.jsonl", 200)
    pipe = split_pipeline(tmp_path, fuse=False, config={"pause": 0.005})
    out = tmp_path / "out.jsonl"
    done = run_stageflow(
        "run", str(pipe), "-i", str(source), "-o", str(out), "--progress-interval", "0.1"
    )
    assert done.returncode == 0, done.stderr
    assert "\x1b" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("stageflow: progress:")]
    assert len(lines) >= 2, done.stderr  # at least one while running, and the last one
    assert "read 200 · written 200" in lines[-1] and "split 2w 200" in lines[-1]
    quiet = run_stageflow("-q", "run", str(pipe), "-i", str(source), "-o", str(out))
    assert quiet.returncode == 0 and "progress" not in quiet.stderr


def test_report_matches_the_run_and_its_schema(tmp_path: Path) -> None:
    """--report on a run with dead letters: valid stageflow-run-report/1 with exact counts."""
    source = tmp_path / "in.jsonl"
    source.write_text(
        '{"id": "1", "text": "ok"}\nnot json\n\n{"id": "4"}\n'
        '{"id": "5", "text": "boom"}\n{"id": "6", "text": "fine too"}\n'
    )
    out, dead, report = tmp_path / "out.jsonl", tmp_path / "dead.jsonl", tmp_path / "r.json"
    pipe = split_pipeline(tmp_path, fuse=False, config={"fail_on": "boom"})
    done = run_stageflow(
        "run", str(pipe), "-i", str(source), "-o", str(out),
        "--dead-letter", str(dead), "--report", str(report),
    )
    assert done.returncode == 1, done.stderr
    document = json.loads(report.read_text())
    jsonschema.validate(document, SCHEMA)
    entries = [json.loads(line) for line in dead.read_text().splitlines()]
    by_stage: dict[str, dict[str, int]] = {}
    for entry in entries:
        errors = by_stage.setdefault(entry["stage"], {})
        errors[entry["error"]] = errors.get(entry["error"], 0) + 1
    assert document["dead_letters"] == {"total": len(entries), "by_stage": by_stage}
    assert document["outcome"] == "records-failed" and document["exit_status"] == 1
    assert document["records_in"] == 5 and document["records_done"] == 5
    assert document["results"] == len(out.read_text().splitlines()) == 2
    split, count = document["stages"]
    assert (split["name"], split["workers"], split["records_in"], split["records_out"]) == (
        "split", 2, 5, 2,
    )
    assert (count["records_in"], count["records_out"]) == (2, 2)
    assert split["busy_seconds"] > 0 and split["p99_seconds"] > 0
    # As readable as the output file (the umask decides), and no temporary file is left.
    assert stat.S_IMODE(report.stat().st_mode) == stat.S_IMODE(out.stat().st_mode)
    assert not [path for path in tmp_path.iterdir() if path.name.startswith(".r.json")]


def test_report_is_written_when_the_engine_cannot_run(tmp_path: Path) -> None:
    """A stage whose setup() fails: exit 3, and the report says engine-error with the reason."""
    pipe = tmp_path / "p.yaml"
    stage = {"name": "b", "uses": "tests.engine.stages:BrokenSetup"}
    pipe.write_text(json.dumps({"name": "b", "stages": [stage]}))
    report = tmp_path / "r.json"
    source = write_lines(tmp_path / "in.jsonl", 3)
    done = run_stageflow("run", str(pipe), "-i", str(source), "--report", str(report))
    assert done.returncode == 3, done.stderr
    document = json.loads(report.read_text())
    jsonschema.validate(document, SCHEMA)
    assert document["outcome"] == "engine-error" and document["exit_status"] == 3
    assert "failed to start" in document["error"]


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_a_held_run_is_visible_in_metrics_and_as_a_stall(tmp_path: Path) -> None:
    """While a record is stuck: metrics scrape live, and the stall names stage, worker, line."""
    source = tmp_path / "in.jsonl"
    source.write_text(
        "".join(
            json.dumps({"id": str(i), "text": "gated" if i == 1 else "a b"}) + "\n"
            for i in range(20)
        )
    )
    gate, report = tmp_path / "gate", tmp_path / "r.json"
    pipe = split_pipeline(tmp_path, fuse=False, config={"gate": str(gate)})
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "stageflow", "run", str(pipe), "-i", str(source),
            "-o", str(tmp_path / "out.jsonl"), "--metrics", "127.0.0.1:0",
            "--stall-after", "1", "--report", str(report),
        ],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        cwd=REPO, env=ENV, text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stderr.readline, "")))  # type: ignore[union-attr]
    reader.start()
    try:
        assert wait_until(lambda: any("metrics at" in line for line in lines), 60), lines
        url = re.search(r"metrics at (http://127\.0\.0\.1:\d+/metrics)", "".join(lines))
        assert url is not None, lines
        pipeline = (("pipeline", "pipe"),)
        results, in_flight = ("stageflow_results_total", pipeline), (
            "stageflow_in_flight_records",
            pipeline,
        )
        # The gated record holds its own frame's later records; the other worker's finish.
        assert wait_until(lambda: scrape(url[1]).get(results, 0) > 0, 60)
        held = scrape(url[1])
        assert held[("stageflow_records_in_total", pipeline)] == 20
        assert 0 < held[in_flight] < 20 and held[results] + held[in_flight] == 20
        assert held[("stageflow_workers", (("pipeline", "pipe"), ("stage", "split")))] == 2
        assert wait_until(lambda: any("stalled:" in line for line in lines), 30), lines
        stall = next(line for line in lines if "stalled:" in line)
        assert re.search(
            r"stage 'split' holds the work: split#[01] \(pid \d+\) inside process\(\) on line 2 "
            r"for \d+s, 1 other worker idle",
            stall,
        ), stall
        gate.touch()
        assert proc.wait(timeout=60) == 0
    finally:
        gate.touch()
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        reader.join()
        proc.stderr.close()  # type: ignore[union-attr]
    assert any("progress resumed" in line for line in lines)
    document = json.loads(report.read_text())
    assert document["results"] == 20 and document["outcome"] == "completed"


def test_report_after_a_signal_says_interrupted_with_the_resume_hint(tmp_path: Path) -> None:
    """SIGINT mid-run: exit 130, and the report has outcome interrupted and the resume hint."""
    source = tmp_path / "in.jsonl"
    source.write_text(
        "".join(
            json.dumps({"id": str(i), "text": "gated" if i == 1 else "a b"}) + "\n"
            for i in range(20)
        )
    )
    gate, report, out = tmp_path / "gate", tmp_path / "r.json", tmp_path / "out.jsonl"
    pipe = split_pipeline(tmp_path, fuse=False, config={"gate": str(gate)})
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "stageflow", "run", str(pipe), "-i", str(source),
            "-o", str(out), "--report", str(report), "--progress-interval", "0.1",
        ],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        cwd=REPO, env=ENV, text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stderr.readline, "")))  # type: ignore[union-attr]
    reader.start()
    try:
        # Everything is read and the gated record holds its frame: stop now.
        assert wait_until(lambda: any("progress: read 20 " in line for line in lines), 60), lines
        proc.send_signal(signal.SIGINT)
        assert wait_until(lambda: any("received SIGINT" in line for line in lines), 30), lines
        gate.touch()
        assert proc.wait(timeout=60) == 130
    finally:
        gate.touch()
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        reader.join()
        proc.stderr.close()  # type: ignore[union-attr]
    document = json.loads(report.read_text())
    jsonschema.validate(document, SCHEMA)
    assert document["outcome"] == "interrupted" and document["exit_status"] == 130
    assert document["resume"] is not None
    hint = document["resume"]["hint"]  # the output is a file: its journal resumes it
    assert hint.startswith("resume with: stageflow run ") and hint.endswith(" --resume")
    assert hint in "".join(lines)


def test_report_path_that_is_no_regular_file_is_refused_before_the_run(tmp_path: Path) -> None:
    """--report naming a folder or a link is one line and exit 2 before anything is written."""
    source = write_lines(tmp_path / "in.jsonl", 3)
    out = tmp_path / "out.jsonl"
    link = tmp_path / "link.json"
    link.symlink_to(tmp_path / "elsewhere.json")
    for target in (tmp_path, link):
        done = run_stageflow(
            "run", str(split_pipeline(tmp_path)), "-i", str(source), "-o", str(out),
            "--report", str(target),
        )
        assert done.returncode == 2, done.stderr
        assert "is not a regular file" in done.stderr and "Traceback" not in done.stderr
        assert not out.exists()
    assert link.is_symlink() and not (tmp_path / "elsewhere.json").exists()


def test_report_that_cannot_be_written_at_the_end_is_not_success(tmp_path: Path) -> None:
    """A report whose folder vanished during the run: the error line and exit 4, never 0."""
    folder = tmp_path / "reports"
    folder.mkdir()
    out = tmp_path / "out.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-m", "stageflow", "run", str(split_pipeline(tmp_path)),
         "-o", str(out), "--report", str(folder / "r.json")],
        stdin=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO, env=ENV,
    )
    assert proc.stdin is not None
    # The run is waiting on its stdin, past every start-up check, while the folder goes.
    proc.stdin.write(b'{"id": "1", "text": "a b"}\n')
    proc.stdin.flush()
    assert wait_until(lambda: out.exists() and out.stat().st_size > 0, timeout=60)
    folder.rmdir()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 4, err
    assert b"cannot write the report" in err and b"Traceback" not in err
    assert len(out.read_text().splitlines()) == 1
