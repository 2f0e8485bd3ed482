"""Nothing lost: worker deaths, poison records, hangs and malformed frames."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import psutil

from stageflow import Pipeline
from tests.engine.stages import CountWords, Split
from tests.engine.test_cli_run import count_lines, write_lines
from tests.helpers import REPO


def test_chaos_kill_9_during_a_run_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    """Workers of every stage killed with SIGKILL, again and again: every result exactly once."""
    total = 50_000
    source = write_lines(tmp_path / "in.jsonl", total)
    out = tmp_path / "out.jsonl"
    pipe = tmp_path / "chaos.yaml"
    pipe.write_text(
        json.dumps(
            {
                "name": "chaos",
                "stages": [
                    {
                        "name": "split",
                        "uses": "tests.engine.stages:Split",
                        "workers": 2,
                        "config": {"pause": 0.0001},
                    },
                    {"name": "count", "uses": "tests.engine.stages:CountWords", "workers": 2},
                ],
            }
        )
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "stageflow", "run", str(pipe), "-i", str(source), "-o", str(out)],
        cwd=REPO,
        stderr=subprocess.PIPE,
    )
    parent = psutil.Process(proc.pid)
    rng = random.Random(7)
    kills = 0
    while proc.poll() is None and kills < 12:
        if count_lines(out) < 2_000 * (kills + 1):
            time.sleep(0.02)  # poll the progress, with a deadline given by pytest-timeout
            continue
        workers = [c for c in parent.children() if c.status() != psutil.STATUS_ZOMBIE]
        if workers:
            victim = rng.choice(workers)
            try:
                victim.kill()
            except psutil.NoSuchProcess:
                continue
            kills += 1
    _, err = proc.communicate(timeout=240)
    stderr = err.decode()
    assert proc.returncode == 0, stderr[-2000:]
    assert kills >= 5, f"only {kills} kills happened; the run was too short to test anything"
    assert stderr.count("exited with status -9") == kills
    ids = Counter(json.loads(line)["id"] for line in out.read_text().splitlines())
    assert len(ids) == total and set(ids.values()) == {1}


def test_poison_record_is_dead_lettered_after_three_deaths(tmp_path: Path) -> None:
    """A record that kills every worker it touches is set aside after 3 deaths; the rest pass."""
    pipeline = Pipeline(
        "poison",
        [
            {"name": "split", "uses": Split, "workers": 2, "config": {"crash_on": "poison"}},
            {"name": "count", "uses": CountWords},
        ],
    )
    items = [{"id": str(i), "text": "poison" if i == 300 else "a b"} for i in range(1000)]
    run = pipeline.run(items, max_errors=1)
    ids = [result.id for result in run]
    assert sorted(ids, key=int) == [str(i) for i in range(1000) if i != 300]
    (entry,) = run.report.dead_letters
    assert entry["line"] == 301 and entry["error"] == "PoisonRecord"
    assert entry["record"] == {"id": "300", "text": "poison"}
    assert run.report.worker_restarts == 3 and run.report.ok


def test_hanging_record_times_out(tmp_path: Path) -> None:
    """A hanging process() is cut off by the timeout, even inside `except Exception`."""
    pipeline = Pipeline(
        "hang",
        [{"name": "split", "uses": Split, "timeout": 0.5, "config": {"hang_on": "zzz"}}],
    )
    items = [{"id": "1", "text": "a"}, {"id": "2", "text": "zzz"}, {"id": "3", "text": "b c"}]
    run = pipeline.run(items, max_errors=1)
    assert sorted(r.id for r in run) == ["1", "3"]
    (entry,) = run.report.dead_letters
    assert entry["line"] == 2 and entry["error"] == "RecordTimeout"


def test_frames_stay_under_the_message_size_limit() -> None:
    """Batches are split by bytes, and a record too big for any frame is dead-lettered."""
    pipeline = Pipeline(
        "big",
        [{"name": "split", "uses": Split, "workers": 2}, {"name": "count", "uses": CountWords}],
    )
    words = " ".join(["word"] * 200)  # about 1 KB per record, 20 records per 20 KB
    items = [{"id": str(i), "text": words} for i in range(300)]
    items.append({"id": "huge", "text": "x " * 10_000})  # 20 KB: over any frame
    run = pipeline.run(items, max_message_size=20_000, max_errors=1)
    results = {result.id: result.words for result in run}
    assert results == {str(i): 200 for i in range(300)}
    (entry,) = run.report.dead_letters
    assert entry["error"] == "RecordTooLarge" and entry["line"] == 301
