"""The compiled receive loop, if it was built and can use the libzmq pyzmq has loaded.

``read_batch`` is the loop from ``_recvloop.pyx``, or None when the extension was not
built (no compiler or no Cython where stageflow was installed) or when the running
libzmq cannot be found unambiguously; ZmqConnection then reads with its pure-Python loop.
"""

from __future__ import annotations

import ctypes
import importlib
from collections.abc import Callable


def _loaded_libzmq() -> str | None:
    """The path of the one libzmq mapped into this process (pyzmq's), if there is one."""
    import zmq  # noqa: F401 -- loads the libzmq whose path we look for

    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if "libzmq" in line.rsplit("/", 1)[-1]}
    except OSError:
        return None
    return paths.pop() if len(paths) == 1 else None


def _load() -> Callable[..., bool] | None:
    try:
        # By name: the module exists only where the extension was built.
        _recvloop = importlib.import_module("stageflow.transport._recvloop")
    except ImportError:
        return None
    path = _loaded_libzmq()
    if path is None:
        return None
    library = ctypes.CDLL(path)
    try:
        addresses = {
            name: ctypes.cast(getattr(library, name), ctypes.c_void_p).value
            for name in _recvloop.FUNCTIONS
        }
    except AttributeError:
        return None
    _recvloop.bind(addresses)
    loop: Callable[..., bool] = _recvloop.read_batch
    return loop


read_batch = _load()
