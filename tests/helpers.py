"""Helpers shared by the tests: paths and running the CLI in a fresh interpreter."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

TESTS = Path(__file__).parent
REPO = TESTS.parent
FIXTURES = TESTS / "fixtures"


def run_stageflow(
    *args: str, pythonpath: Sequence[Path] = (), cwd: Path = REPO, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m stageflow ARGS`` in a fresh interpreter with extra PYTHONPATH entries."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join(str(p) for p in pythonpath)
    return subprocess.run(
        [sys.executable, "-m", "stageflow", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=timeout,
    )


def read_stderr_until(proc: subprocess.Popen[bytes], text: bytes) -> bytes:
    """Read ``proc``'s stderr line by line until one holds ``text``; return what was read.

    Used before a second signal: two signals sent together would merge into one.
    """
    assert proc.stderr is not None
    seen = b""
    while text not in seen:
        line = proc.stderr.readline()
        assert line, f"the process ended before it wrote {text!r}: {seen!r}"
        seen += line
    return seen
