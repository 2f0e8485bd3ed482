"""The collector held off at start-up (stageflow._collector): back as it was, what the start
made frozen."""

from __future__ import annotations

import gc
import subprocess
import sys
from pathlib import Path

import pytest

from stageflow._collector import starting


@pytest.mark.parametrize("before", [True, False])
def test_starting_restores_the_state_it_found_and_freezes(before: bool) -> None:
    was = gc.isenabled()
    try:
        (gc.enable if before else gc.disable)()
        with starting():
            assert not gc.isenabled()
            made = [[] for _ in range(100)]
        assert gc.isenabled() is before
        assert gc.get_freeze_count() >= len(made)
        with pytest.raises(RuntimeError), starting():
            raise RuntimeError("inside")
        assert gc.isenabled() is before
    finally:
        gc.unfreeze()
        (gc.enable if was else gc.disable)()


def test_importing_stageflow_and_running_the_cli_leave_the_collector_on(tmp_path: Path) -> None:
    """A program that imports stageflow, or calls its command line in-process (which holds
    the collector off as it starts and collects rarely while records flow), still has its
    cycles collected afterwards, as often as before."""
    script = (
        "import gc, sys, stageflow; assert gc.isenabled(), 'import'\n"
        "before = gc.get_threshold()\n"
        "from stageflow.cli import main\n"
        "status = main(['validate', 'examples/seed/pipeline.yaml'])\n"
        "status += main(['-q', 'run', 'examples/seed/pipeline.yaml', '-i',\n"
        "                'examples/seed/sample.jsonl', '-o', sys.argv[1]])\n"
        "assert gc.isenabled(), 'main'\n"
        "assert gc.get_threshold() == before, gc.get_threshold()\n"
        "print(status)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "out.jsonl")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[-1] == "0"
