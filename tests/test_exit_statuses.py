"""Drift guard: the exit statuses in the README, in `stageflow run --help` and in the code agree."""

from __future__ import annotations

import re

import pytest

import stageflow.cli
from stageflow.cli import build_parser
from tests.helpers import REPO


def test_every_exit_status_is_in_the_readme_and_in_run_help() -> None:
    """Each EXIT_* constant has a row in the README's table and a line in `run --help`."""
    codes = {value for name, value in vars(stageflow.cli).items() if name.startswith("EXIT_")}
    readme = (REPO / "README.md").read_text()
    table = readme.split("### Exit statuses", 1)[1].split("\n\n", 2)[1]
    documented = {int(code) for code in re.findall(r"^\| (\d+) \|", table, re.M)}
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command")
    help_text = subparsers.choices["run"].format_help()  # type: ignore[attr-defined]
    listed = {int(code) for code in re.findall(r"^  (\d+)  ", help_text, re.M)}
    assert codes == documented == listed


def test_run_help_fits_an_80_column_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """The description and the statuses of `run --help` are wrapped, not one long line."""
    monkeypatch.setenv("COLUMNS", "80")
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command")
    help_text = subparsers.choices["run"].format_help()  # type: ignore[attr-defined]
    assert [line for line in help_text.splitlines() if len(line) > 80] == []
