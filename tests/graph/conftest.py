"""Fixtures and helpers for the ``stageflow graph`` tests."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Mapping

import pytest

from stageflow.graph import Graph
from tests.graph import cases


@pytest.fixture(params=sorted(cases.CASES))
def any_graph(request: pytest.FixtureRequest) -> Graph:
    """Each test case graph in turn: plain, with a mismatch, with hostile names."""
    return cases.CASES[request.param]()


@pytest.fixture
def dot_program() -> str:
    """Path of Graphviz's `dot`; the test is skipped (with the reason) when it is missing."""
    path = shutil.which("dot")
    if path is None:
        pytest.skip("Graphviz's `dot` is not installed (apt-get install graphviz)")
    return path


def run_cli(
    *args: str, env: Mapping[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[bytes]:
    """Run ``python -m stageflow`` in a subprocess from the repository root."""
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(cases.REPO), os.environ.get("PYTHONPATH")])
    )
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "stageflow", *args],
        cwd=cases.REPO,
        env=full_env,
        capture_output=True,
        timeout=timeout,
        check=False,
    )
