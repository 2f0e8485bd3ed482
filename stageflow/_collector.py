"""The garbage collector, held off while the ``stageflow`` command starts.

Importing stageflow, pydantic and ZeroMQ, and reading the pipeline, makes a few hundred
thousand long-lived objects and almost no garbage, yet the collector walks the young ones
every few hundred allocations and now and then all of them. :func:`starting` keeps it off
for a block of start-up and then freezes what exists (``gc.freeze()``: moved where no
collection looks again) before turning it back on, so the passes that would free nothing
never run, not even the one a plain re-enable would make over everything made meanwhile.
Measured with callgrind on the CLI's imports and pipeline check: 7.5% fewer instructions.

Only for the command's own process: freezing keeps whatever exists then out of every later
collection, which a library must not do to the program that imports it.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

__all__ = ["starting"]


@contextlib.contextmanager
def starting() -> Iterator[None]:
    """Keep the collector off inside the block; then freeze what exists and turn it back
    on, if it was on."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if collecting:
            gc.enable()
