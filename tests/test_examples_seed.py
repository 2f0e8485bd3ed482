"""The seed example's own instructions work as written."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

from tests.helpers import REPO, run_stageflow

SEED = REPO / "examples" / "seed"


def test_the_commands_in_the_pipeline_file_comment_succeed() -> None:
    """Every `stageflow ...` command the comment of examples/seed/pipeline.yaml shows exits 0."""
    commands = [
        shlex.split(line.lstrip("# "))
        for line in (SEED / "pipeline.yaml").read_text().splitlines()
        if line.lstrip("# ").startswith("stageflow ")
    ]
    assert len(commands) == 2
    for command in commands:
        done = run_stageflow(*command[1:])
        assert done.returncode == 0, (command, done.stderr)


def test_make_sample_help_prints_help_and_writes_nothing(tmp_path: Path) -> None:
    """`make_sample.py --help` prints usage instead of writing a file named --help."""
    done = subprocess.run(
        [sys.executable, str(SEED / "make_sample.py"), "--help"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert done.returncode == 0 and done.stdout.startswith("usage: make_sample.py")
    assert list(tmp_path.iterdir()) == []
    written = tmp_path / "s.jsonl"
    subprocess.run([sys.executable, str(SEED / "make_sample.py"), str(written)], check=True)
    assert written.read_bytes() == (SEED / "sample.jsonl").read_bytes()
