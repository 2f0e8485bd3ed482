"""Drift guards on the public surface: stageflow.__all__ and the hookspecs."""

from __future__ import annotations

import inspect
import types

import stageflow
from stageflow import hookspecs


def test_all_is_sorted() -> None:
    """stageflow.__all__ is kept in sorted order."""
    assert stageflow.__all__ == sorted(stageflow.__all__)


def test_all_matches_public_names() -> None:
    """Every public, non-module name of the package is in __all__, and every entry exists."""
    for name in stageflow.__all__:
        assert hasattr(stageflow, name), name  # also loads the lazily imported names
    public = {
        name
        for name, value in vars(stageflow).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert public | {"__version__"} == set(stageflow.__all__)


def test_hookspecs_are_prefixed_and_documented() -> None:
    """Every hookspec starts with `stageflow_` and has a docstring, and none lacks its marker."""
    marker = f"{hookspecs.PROJECT}_spec"
    specs = {
        name: func
        for name, func in inspect.getmembers(hookspecs, inspect.isfunction)
        if hasattr(func, marker)
    }
    assert specs, "stageflow.hookspecs defines no hookspec"
    for name, func in specs.items():
        assert name.startswith("stageflow_"), f"hookspec {name} must start with stageflow_"
        assert inspect.getdoc(func), f"hookspec {name} needs a docstring"
    unmarked = [
        name
        for name, func in inspect.getmembers(hookspecs, inspect.isfunction)
        if name.startswith("stageflow_") and name not in specs
    ]
    assert unmarked == [], f"functions {unmarked} look like hooks but lack @hookspec"
