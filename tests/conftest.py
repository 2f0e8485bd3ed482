"""Shared fixtures: fixture plugin distributions installed into temporary directories."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers import FIXTURES, run_stageflow


def pip_install_target(source: Path, target: Path) -> Path:
    """Install the distribution at ``source`` into ``target`` the way a user's pip would.

    The source is copied first so that the build leaves no egg-info in the repository.
    """
    build_copy = target.parent / f"{source.name}-src"
    shutil.copytree(source, build_copy, ignore=shutil.ignore_patterns("*.egg-info", "build"))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-deps",
            "--target",
            str(target),
            str(build_copy),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return target


@pytest.fixture(scope="session")
def wordcount_plugin_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A --target directory holding the installed stageflow-wordcount fixture distribution.

    Put it on PYTHONPATH (see ``run_stageflow``) and its ``wordcount`` stage is discovered
    through its entry point.
    """
    root = tmp_path_factory.mktemp("wordcount-plugin")
    return pip_install_target(FIXTURES / "wordcount_plugin", root / "site")


@pytest.fixture(scope="session")
def broken_plugin_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A --target directory holding a plugin distribution whose module raises ImportError."""
    root = tmp_path_factory.mktemp("broken-plugin")
    return pip_install_target(FIXTURES / "broken_plugin", root / "site")


@pytest.fixture
def stageflow_cli() -> Callable[..., subprocess.CompletedProcess[str]]:
    """``python -m stageflow ARGS`` in a fresh interpreter (see tests.helpers.run_stageflow)."""
    return run_stageflow
