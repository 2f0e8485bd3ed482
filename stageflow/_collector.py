"""The garbage collector, paused while a process starts.

Importing stageflow, pydantic, ZeroMQ and Twisted makes tens of thousands of long-lived
objects and almost no garbage, yet every few hundred allocations the collector walks the
young ones, and now and then all of them: a sixth of the start-up time goes to passes that
free nothing. :class:`paused` turns the collector off for a block and back on as it was, so
a process that imports stageflow and then makes cycles still has them collected.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

__all__ = ["paused"]


@contextlib.contextmanager
def paused() -> Iterator[None]:
    """Keep the collector off inside the block; leave it as it was found."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()
