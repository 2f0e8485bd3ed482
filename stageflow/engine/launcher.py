"""Launchers: how the engine starts local worker processes.

A launcher starts a process that runs ``target(settings)`` (by default
:func:`stageflow.engine.worker.run_worker`) and exits with the status it returns, and hands
back a :class:`WorkerProcess`, which behaves like :class:`subprocess.Popen` for what the
engine needs. The coordinator does not care how the process was started: a worker counts
once it has registered on the control plane.

:class:`SubprocessLauncher` starts a fresh interpreter per worker. Its settings travel on the
child's private stdin (closed after them, never the command line or a file), with the
caller's ``sys.path``; the child ignores SIGINT (the caller decides what Ctrl-C means) and is
SIGKILLed by the kernel when its parent dies, so no worker outlives the caller.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import signal
import subprocess
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, Protocol

__all__ = ["DEFAULT_TARGET", "Launcher", "SubprocessLauncher", "WorkerProcess"]

#: What a worker process runs: ``module:function``, called with the settings dict.
DEFAULT_TARGET = "stageflow.engine.worker:run_worker"
#: Exit status of a child whose target could not run at all.
TARGET_FAILED = 3


class WorkerProcess(Protocol):
    """A started worker, as :class:`subprocess.Popen` presents one (``Popen`` is one)."""

    @property
    def pid(self) -> int: ...

    @property
    def returncode(self) -> int | None:
        """Exit status once known: negative for the signal that ended it, as with Popen."""

    def poll(self) -> int | None:
        """The exit status if the process has ended, else None; never blocks."""

    def kill(self) -> None:
        """SIGKILL the process; nothing happens if it has already ended."""

    def wait(self, timeout: float | None = None) -> int:
        """The exit status, waiting for it; raises subprocess.TimeoutExpired on timeout."""


class Launcher(ABC):
    """Starts worker processes running ``target(settings)``; :meth:`close` once done."""

    def __init__(self, target: str = DEFAULT_TARGET) -> None:
        self.target = target

    @abstractmethod
    def spawn(self, settings: dict[str, Any]) -> WorkerProcess:
        """Start one worker with ``settings`` (a JSON-able dict, passed on untouched)."""

    @abstractmethod
    def close(self) -> None:
        """Stop the launcher's own processes and kill every worker still running."""

    def _envelope(self, settings: dict[str, Any]) -> dict[str, Any]:
        """What a child needs besides its settings: the target, our import path, our pid."""
        return {
            "target": self.target,
            "settings": settings,
            "sys_path": [p for p in sys.path if p and os.path.isdir(p)],
            "parent": os.getpid(),
        }


class SubprocessLauncher(Launcher):
    """A fresh interpreter per worker; its settings arrive on its stdin, closed after them."""

    def __init__(self, target: str = DEFAULT_TARGET) -> None:
        super().__init__(target)
        self._started: list[subprocess.Popen[bytes]] = []

    def spawn(self, settings: dict[str, Any]) -> WorkerProcess:
        proc = subprocess.Popen(
            [sys.executable, "-m", __name__],
            stdin=subprocess.PIPE,
            stdout=_caller_stderr(),
            close_fds=True,
        )
        assert proc.stdin is not None
        # OSError: it died at once; its exit status tells the caller, like any death.
        with contextlib.suppress(OSError), proc.stdin:
            proc.stdin.write(json.dumps(self._envelope(settings)).encode())
        self._started = [p for p in self._started if p.poll() is None]
        self._started.append(proc)
        return proc

    def close(self) -> None:
        for proc in self._started:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        self._started.clear()


def _caller_stderr() -> int:
    """The caller's stderr descriptor, where a worker's output goes (or /dev/null)."""
    try:
        if sys.__stderr__ is not None:
            return sys.__stderr__.fileno()
    except (AttributeError, OSError, ValueError):
        pass
    return subprocess.DEVNULL


def _die_with_parent(parent: int) -> None:
    """Have the kernel SIGKILL this process when ``parent`` dies (Linux); exit if it has."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # it died before prctl took effect
        os._exit(TARGET_FAILED)


def _child() -> None:
    chunks = []
    while chunk := os.read(0, 1 << 16):
        chunks.append(chunk)
    envelope = json.loads(b"".join(chunks))
    _die_with_parent(envelope["parent"])
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.path[:0] = [p for p in envelope.get("sys_path", ()) if p not in sys.path]
    module, _, name = envelope["target"].partition(":")
    target: Callable[[dict[str, Any]], int] = getattr(importlib.import_module(module), name)
    status = target(envelope["settings"])
    with contextlib.suppress(OSError, ValueError):
        sys.stdout.flush()
        sys.stderr.flush()
    # The worker closed its sockets; leave without running interpreter teardown, which a
    # ZeroMQ context a dead peer keeps busy could hold up.
    os._exit(status)


if __name__ == "__main__":
    _child()
