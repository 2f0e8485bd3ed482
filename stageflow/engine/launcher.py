"""Launchers: how the engine starts local worker processes.

A launcher starts a process that runs ``target(settings)`` (by default
``stageflow.engine.worker:run_worker``) and exits with the status it returns; it hands back a
:class:`WorkerProcess`, which behaves like :class:`subprocess.Popen` for what the engine
needs. Two implementations:

- :class:`ForkServerLauncher` (the default): one preloaded server process per launcher
  (:mod:`stageflow.engine.bootstrap`) has imported the engine, Twisted's modules, pydantic,
  pyzmq and the pipeline's stage modules once, and forks each worker from that clean,
  single-threaded process in a few milliseconds. It reaps its children and reports their
  exit statuses over its pipe, so :meth:`WorkerProcess.poll` and ``wait`` work although the
  worker is not our child.
- :class:`SubprocessLauncher`: a fresh interpreter per worker; slower to start, but shares
  nothing with any other process.

Either way a worker's settings travel privately (a pipe, never the command line or a file),
the caller's ``sys.path`` goes with them, the worker's stdout and stderr are the caller's
stderr, it ignores SIGINT (the caller decides what Ctrl-C means), and it is SIGKILLed by the
kernel when its parent dies, so no worker outlives the caller.

One server per launcher, not one per caller process: a server reused across runs would go on
serving the stage modules it imported first after the user edited them, and would die with
the thread that started it (``PR_SET_PDEATHSIG`` follows the creating thread), taking later
runs' workers with it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any, Protocol

from stageflow.errors import EngineError

__all__ = [
    "DEFAULT_TARGET",
    "ForkServerLauncher",
    "Launcher",
    "SubprocessLauncher",
    "WorkerProcess",
]

log = logging.getLogger("stageflow.engine")

#: What a worker process runs: ``module:function``, called with the settings dict.
DEFAULT_TARGET = "stageflow.engine.worker:run_worker"
#: Seconds a fork server may take to import everything and answer.
SERVER_START_TIMEOUT = 60.0
#: Seconds :meth:`ForkServerLauncher.close` waits for the server to report its last exits.
CLOSE_TIMEOUT = 5.0

_BOOTSTRAP = "stageflow.engine.bootstrap"
_PIPE_BUFFER = 1 << 16
#: Linux's default /proc/sys/fs/pipe-max-size.
_PIPE_MAX = 1 << 20


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

    def __enter__(self) -> Launcher:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class SubprocessLauncher(Launcher):
    """A fresh interpreter per worker; its settings arrive on its stdin, closed after them."""

    def __init__(self, target: str = DEFAULT_TARGET) -> None:
        super().__init__(target)
        self._started: list[subprocess.Popen[bytes]] = []

    def spawn(self, settings: dict[str, Any]) -> WorkerProcess:
        proc = subprocess.Popen(
            [sys.executable, "-m", _BOOTSTRAP, "worker"],
            stdin=subprocess.PIPE,
            stdout=_caller_stderr(),
            close_fds=True,
        )
        assert proc.stdin is not None
        data = json.dumps(self._envelope(settings)).encode()
        if len(data) > _PIPE_BUFFER and hasattr(fcntl, "F_SETPIPE_SZ"):
            # Room for all of it, so we need not wait for the child to import and read;
            # OSError: over the user's pipe quota, and then we wait.
            with contextlib.suppress(OSError):
                fcntl.fcntl(proc.stdin, fcntl.F_SETPIPE_SZ, min(len(data), _PIPE_MAX))
        # OSError: it died at once; its exit status tells the caller, like any death.
        with contextlib.suppress(OSError), proc.stdin:
            proc.stdin.write(data)
        self._started = [p for p in self._started if p.poll() is None]
        self._started.append(proc)
        return proc

    def close(self) -> None:
        for proc in self._started:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        self._started.clear()


class ForkServerLauncher(Launcher):
    """Forks workers from one preloaded server process, started with the launcher.

    ``preload`` names modules (the pipeline's stage modules) the server imports once, after
    the engine's own; one that fails to import is left to each worker, which reports why.
    If the server dies, the next :meth:`spawn` starts a new one and says so in the log.
    """

    def __init__(self, preload: Iterable[str] = (), target: str = DEFAULT_TARGET) -> None:
        super().__init__(target)
        module = target.partition(":")[0]
        self.preload = [m for m in dict.fromkeys([module, *preload]) if m != "__main__"]
        self._lock = threading.Lock()
        self._server = _ForkServer(self.preload)

    def spawn(self, settings: dict[str, Any]) -> WorkerProcess:
        with self._lock:
            envelope = self._envelope(settings)
            # A second try: a server that died since the last spawn is noticed only now.
            for _ in range(2):
                forked = self._usable_server().spawn(envelope)
                if forked is not None:
                    return forked
            raise EngineError(
                f"the fork server (pid {self._server.proc.pid}) died while starting a "
                "worker; see the log above, or use SubprocessLauncher"
            )

    def _usable_server(self) -> _ForkServer:
        server = self._server
        if server.closed:
            raise EngineError("this launcher is closed; create a new one")
        if server.wait_ready():
            return server
        if server.tainted:
            log.warning(
                "stage module %s starts a Twisted reactor, a ZeroMQ context or a thread when "
                "imported, so it cannot be preloaded; each worker imports the stage modules "
                "itself",
                server.tainted,
            )
            self.preload = self.preload[:1]
        else:
            log.warning(
                "the fork server (pid %d) ended with status %s, and its workers with it; "
                "starting a new one",
                server.proc.pid,
                server.proc.poll(),
            )
        server.close()
        server = self._server = _ForkServer(self.preload)
        if not server.wait_ready():
            server.close()
            raise EngineError(
                f"the fork server could not start (status {server.proc.returncode}; "
                f"{'tainted by ' + server.tainted if server.tainted else 'see the log above'}); "
                "use SubprocessLauncher"
            )
        return server

    def close(self) -> None:
        with self._lock:
            self._server.close()

    @property
    def server_pid(self) -> int:
        """The current fork server's process id."""
        return self._server.proc.pid


class _Forked:
    """A worker forked by a server: its exit status comes from the server's reports."""

    def __init__(self, server: _ForkServer, pid: int) -> None:
        self.server = server
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self.server.exit_status(self.pid, 0.0)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            self.returncode = self.server.exit_status(self.pid, timeout)
        if self.returncode is None:
            raise subprocess.TimeoutExpired(f"worker {self.pid}", timeout or 0.0)
        return self.returncode

    def kill(self) -> None:
        if self.poll() is None:
            self.server.request({"op": "kill", "pid": self.pid, "signal": signal.SIGKILL})


class _ForkServer:
    """One fork server process and the two pipes we talk to it through."""

    def __init__(self, preload: list[str]) -> None:
        reply_r, reply_w = os.pipe()
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", _BOOTSTRAP, "fork-server", str(reply_w), str(os.getpid())],
                stdin=subprocess.PIPE,
                stdout=_caller_stderr(),
                close_fds=True,
                pass_fds=(reply_w,),
            )
        finally:
            os.close(reply_w)
        assert self.proc.stdin is not None
        self._stdin = self.proc.stdin
        self.requests = self._stdin.fileno()
        os.set_blocking(self.requests, False)
        self.replies = reply_r
        self._buffer = b""
        self._lock = threading.RLock()
        self.exits: dict[int, int] = {}
        self.live: set[int] = set()
        self.spawned: list[int] = []
        self.ready = False
        self.tainted: str | None = None
        self.closed = False
        self.lost = False
        self.request({"op": "preload", "modules": preload, "sys_path": sys.path})

    # -- talking ---------------------------------------------------------------------------

    def request(self, message: dict[str, Any]) -> None:
        """Send one request; read replies meanwhile, so neither side blocks the other."""
        data = json.dumps(message).encode() + b"\n"
        with self._lock:
            while data and not self.lost:
                _, writable, _ = select.select([], [self.requests], [], 0)
                if writable:
                    try:
                        data = data[os.write(self.requests, data) :]
                    except BrokenPipeError:
                        self._on_lost()
                else:
                    self._read(None, wait_for_write=True)

    def _read(self, timeout: float | None, wait_for_write: bool = False) -> bool:
        """Wait up to ``timeout`` for replies and handle them; False once the server is gone."""
        if self.lost:
            return False
        writers = [self.requests] if wait_for_write else []
        readable, _, _ = select.select([self.replies], writers, [], timeout)
        if not readable:
            return True
        chunk = os.read(self.replies, 1 << 16)
        if not chunk:
            self._on_lost()
            return False
        self._buffer += chunk
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            self._handle(json.loads(line))
        return True

    def _handle(self, reply: dict[str, Any]) -> None:
        if "exit" in reply:
            self.live.discard(reply["exit"])
            self.exits[reply["exit"]] = reply["code"]
        elif "spawned" in reply:
            self.live.add(reply["spawned"])
            self.spawned.append(reply["spawned"])
        elif "ready" in reply:
            self.ready = True
            self.tainted = reply.get("tainted")
            for module, reason in reply.get("failed", {}).items():
                log.debug("fork server could not preload %s (%s)", module, reason)

    def _on_lost(self) -> None:
        """The server is gone: the kernel killed its workers with it (PR_SET_PDEATHSIG)."""
        self.lost = True
        for pid in self.live:
            self.exits.setdefault(pid, -signal.SIGKILL)
        self.live.clear()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(CLOSE_TIMEOUT)

    def _wait_for(self, done: Callable[[], object], timeout: float | None) -> None:
        """Handle replies until ``done()``, the server is gone, or ``timeout`` (0: one look)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while not done() and not self.lost:
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                self._read(left)
                if left == 0.0:
                    return

    # -- what the launcher asks ------------------------------------------------------------

    def wait_ready(self) -> bool:
        """True once the server has preloaded everything; False if it died or is tainted."""
        self._wait_for(lambda: self.ready, SERVER_START_TIMEOUT)
        return self.ready and not self.lost and self.tainted is None

    def spawn(self, envelope: dict[str, Any]) -> _Forked | None:
        """The forked worker, or None if the server is gone."""
        with self._lock:
            self.spawned.clear()
            self.request({**envelope, "op": "spawn", "cwd": os.getcwd(), "env": dict(os.environ)})
            self._wait_for(lambda: self.spawned, SERVER_START_TIMEOUT)
            return _Forked(self, self.spawned[0]) if self.spawned else None

    def exit_status(self, pid: int, timeout: float | None) -> int | None:
        """The exit status of ``pid`` (handed over once), waiting up to ``timeout``."""
        self._wait_for(lambda: pid in self.exits, timeout)
        with self._lock:
            return self.exits.pop(pid, None)

    def close(self) -> None:
        """Ask the server to stop: it kills what is left, reports, and exits."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
            # "stop" as well as end of file: a process forked from ours may hold the pipe.
            self.request({"op": "stop"})
            with contextlib.suppress(OSError):
                self._stdin.close()
            self._wait_for(lambda: False, CLOSE_TIMEOUT)
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
            self._on_lost()
            os.close(self.replies)


def _caller_stderr() -> int:
    """Our stderr's descriptor, for a child's stdout (so it never mixes into our output)."""
    try:
        if sys.__stderr__ is not None:
            return sys.__stderr__.fileno()
    except (AttributeError, OSError, ValueError):
        pass
    return subprocess.DEVNULL
