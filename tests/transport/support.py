"""Helpers shared by the transport tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def run_until(reactor: Any, condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Turn ``reactor`` until ``condition()`` is true; fail the test after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        reactor.iterate(0.01)
