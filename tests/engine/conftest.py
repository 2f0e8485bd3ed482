"""Engine test fixtures: no test may leave a worker process behind."""

from __future__ import annotations

import time
from collections.abc import Iterator

import psutil
import pytest


def live_children() -> list[psutil.Process]:
    children = []
    for child in psutil.Process().children(recursive=True):
        try:
            if child.status() != psutil.STATUS_ZOMBIE:
                children.append(child)
        except psutil.NoSuchProcess:
            pass
    return children


def wait_until(condition, timeout: float = 10.0, interval: float = 0.02) -> bool:  # type: ignore[no-untyped-def]
    """Poll ``condition`` until it is true or ``timeout`` passes; return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)


#: Fixtures that keep workers up across several tests on purpose; they check on teardown.
SHARED_WORKERS = {"live_pipeline"}


@pytest.fixture(autouse=True)
def no_process_left_behind(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail the test if any child process outlives it."""
    yield
    if SHARED_WORKERS & set(request.fixturenames):
        return
    assert wait_until(lambda: not live_children(), timeout=10), (
        f"processes left behind: {[p.cmdline() for p in live_children()]}"
    )
