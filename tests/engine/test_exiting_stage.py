"""A stage whose process() calls sys.exit() fails that record, never the run."""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers import run_stageflow

STAGE = """
import sys
from pydantic import BaseModel
import stageflow

class Rec(BaseModel):
    id: int

class Quits(stageflow.Stage):
    name = "quits"
    Input = Rec
    Output = Rec

    def process(self, item: Rec) -> Rec:
        if item.id == 3:
            sys.exit(5)
        return item
"""


def test_sys_exit_in_process_is_one_dead_letter(tmp_path: Path) -> None:
    """sys.exit() on one record dead-letters it as SystemExit; the others are written; exit 0."""
    (tmp_path / "quitting.py").write_text(STAGE)
    pipe = tmp_path / "p.yaml"
    pipe.write_text(json.dumps({"name": "q", "stages": [{"name": "q", "uses": "quitting:Quits"}]}))
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"id": i}) + "\n" for i in range(1, 6)))
    out, dead = tmp_path / "out.jsonl", tmp_path / "dead.jsonl"
    done = run_stageflow(
        "run",
        str(pipe),
        "-i",
        str(source),
        "-o",
        str(out),
        "--dead-letter",
        str(dead),
        "--max-errors",
        "1",
        pythonpath=[tmp_path],
        cwd=tmp_path,
        timeout=90,
    )
    assert done.returncode == 0, done.stderr
    assert sorted(json.loads(line)["id"] for line in out.read_text().splitlines()) == [1, 2, 4, 5]
    entries = [json.loads(line) for line in dead.read_text().splitlines()]
    assert [(e["line"], e["error"]) for e in entries] == [(3, "SystemExit")]
