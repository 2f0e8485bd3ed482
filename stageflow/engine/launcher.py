"""Launchers: how the engine starts local worker processes.

A launcher starts a process that runs ``target(settings)`` (by default
``stageflow.engine.worker:run_worker``) and exits with the status it returns; it hands back a
:class:`WorkerProcess`, which behaves like :class:`subprocess.Popen` for what the engine
needs. Two implementations:

- :class:`ForkServerLauncher` (the default): one preloaded server process per launcher
  (:mod:`stageflow.engine.bootstrap`) has imported the engine, Twisted's modules, pydantic,
  pyzmq and the pipeline's stage modules once, and forks each worker from that clean,
  single-threaded process in a few milliseconds. It starts importing as soon as the
  launcher is made, so a caller that makes it first (``stageflow run`` does, before it
  reads the pipeline) overlaps those imports with its own work, and names the stage
  modules later (:meth:`Launcher.prepare`). It reaps its children and reports their
  exit statuses over its pipe, so :meth:`WorkerProcess.poll` and ``wait`` work although the
  worker is not our child. :meth:`Launcher.spawn_all` returns once the requests are sent,
  not once the server has forked them: a worker's ``pid`` waits for its fork.
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
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from types import TracebackType
from typing import IO, Any, Protocol

from stageflow.engine import bootstrap
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
#: Seconds a fork server may stay stopped (SIGSTOP) while we wait for it, before it is killed.
STOPPED_GRACE = 1.0
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

    def spawn_all(self, settings: Sequence[dict[str, Any]]) -> list[WorkerProcess]:
        """Start one worker per settings dict, in that order (at once, where the launcher
        can do better than one after another)."""
        return [self.spawn(one) for one in settings]

    @abstractmethod
    def close(self) -> None:
        """Stop the launcher's own processes and kill every worker still running."""

    def prepare(self, modules: Iterable[str]) -> None:  # noqa: B027 - optional, not abstract
        """Modules every worker will import (the stages'), for a launcher that loads them
        ahead; this one does not, and a worker imports what it needs."""

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

    ``preload`` (and later :meth:`prepare`) names modules (the pipeline's stage modules)
    the server imports once, after the engine's own; one that fails to import is left to
    each worker, which reports why. If the server dies, the next :meth:`spawn` starts a new
    one and says so in the log.

    ``fork`` makes the first server by forking this process rather than starting an
    interpreter, which saves the interpreter's start and the imports this process has
    already done (stageflow's, pydantic's). Only for a program's first steps, which is how
    ``stageflow run`` uses it: the child keeps a copy of everything the caller has, so the
    caller should hold nothing yet that must not be shared or kept (open sockets, a big
    heap, locks); the child closes every descriptor but its pipes and the standard ones,
    and runs no atexit handler or finalizer of the caller's. A caller with a second
    thread, a ZeroMQ context or a Twisted reactor gets a started server all the same, and
    so does every replacement server.
    """

    def __init__(
        self, preload: Iterable[str] = (), target: str = DEFAULT_TARGET, fork: bool = False
    ) -> None:
        super().__init__(target)
        self.preload = [target.partition(":")[0]]
        self._lock = threading.Lock()
        # Cleared once a stage module spoiled a server: later ones import only the engine.
        self._stage_modules = True
        self._server = _ForkServer(self.preload, fork)
        self.prepare(preload)

    def prepare(self, modules: Iterable[str]) -> None:
        with self._lock:
            new = [m for m in dict.fromkeys(modules) if m not in self.preload and m != "__main__"]
            if not new or not self._stage_modules:
                return
            self.preload += new
            self._server.preload(new)

    def spawn(self, settings: dict[str, Any]) -> WorkerProcess:
        return self.spawn_all([settings])[0]

    def spawn_all(self, settings: Sequence[dict[str, Any]]) -> list[WorkerProcess]:
        with self._lock:
            envelopes = [self._envelope(one) for one in settings]
            # A second try: a server that died since the last spawn is noticed only now.
            for _ in range(2):
                forked = self._usable_server().spawn(envelopes)
                if forked is not None:
                    return list(forked)
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
            self._stage_modules = False
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
    """A worker forked by a server: its pid and exit status come from the server's reports.

    It exists as soon as its request is sent, before the server has forked it, so the
    caller need not wait for a batch of forks: :attr:`pid` waits for the fork (0 if the
    server died first), while :meth:`poll` never waits.
    """

    def __init__(self, server: _ForkServer) -> None:
        self.server = server
        self.forked: int | None = None
        self.returncode: int | None = None

    @property
    def pid(self) -> int:
        self.server.wait_forked(self)
        return self.forked or 0

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self.server.exit_status(self, 0.0)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            self.returncode = self.server.exit_status(self, timeout)
        if self.returncode is None:
            raise subprocess.TimeoutExpired(f"worker {self.forked}", timeout or 0.0)
        return self.returncode

    def kill(self) -> None:
        if self.poll() is None and self.pid:
            self.server.request({"op": "kill", "pid": self.pid, "signal": signal.SIGKILL})


class _ForkServer:
    """One fork server process and the two pipes we talk to it through."""

    def __init__(self, preload: list[str], fork: bool = False) -> None:
        reply_r, reply_w = os.pipe()
        try:
            out = _caller_stderr()
            self.proc: WorkerProcess
            if fork and out == 2 and not bootstrap.unforkable():
                self.proc, self._stdin = _fork_caller(reply_w)
            else:
                command = ["fork-server", str(reply_w), str(os.getpid())]
                popen = subprocess.Popen(
                    [sys.executable, "-m", _BOOTSTRAP, *command],
                    stdin=subprocess.PIPE,
                    stdout=out,
                    close_fds=True,
                    pass_fds=(reply_w,),
                )
                assert popen.stdin is not None
                self.proc, self._stdin = popen, popen.stdin
        finally:
            os.close(reply_w)
        self.requests = self._stdin.fileno()
        os.set_blocking(self.requests, False)
        self.replies = reply_r
        self._buffer = b""
        self._lock = threading.RLock()
        self.exits: dict[int, int] = {}
        self.live: set[int] = set()
        #: Workers asked for and not forked yet, in the order the server forks them.
        self.unforked: deque[_Forked] = deque()
        #: Preload requests not answered yet: the server is ready when none is left.
        self.unanswered = 0
        self.tainted: str | None = None
        self.closed = False
        self.lost = False
        self._stopped_at: float | None = None  # when the server was first seen stopped
        self._silent = False  # whether the last wait for replies ended with none
        self.preload(preload)

    @property
    def ready(self) -> bool:
        return not self.unanswered

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
        self._silent = not readable
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
            self.unforked.popleft().forked = reply["spawned"]
        elif "ready" in reply:
            self.unanswered -= 1
            self.tainted = self.tainted or reply.get("tainted")
            for module, reason in reply.get("failed", {}).items():
                log.debug("fork server could not preload %s (%s)", module, reason)

    def _on_lost(self) -> None:
        """The server is gone: the kernel killed its workers with it (PR_SET_PDEATHSIG)."""
        self.lost = True
        for pid in self.live:
            self.exits.setdefault(pid, -signal.SIGKILL)
        self.live.clear()
        for never in self.unforked:
            never.returncode = -signal.SIGKILL
        self.unforked.clear()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(CLOSE_TIMEOUT)

    def _wait_for(self, done: Callable[[], object], timeout: float | None) -> None:
        """Handle replies until ``done()``, the server is gone, or ``timeout`` (0: one look).

        A server stopped by SIGSTOP would never answer: seen stopped twice, ``STOPPED_GRACE``
        apart, it is killed (its workers with it, whose records go to new ones) and so lost.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while not done() and not self.lost:
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                wait = STOPPED_GRACE if left is None else min(left, STOPPED_GRACE)
                self._read(wait)
                if deadline is not None and time.monotonic() >= deadline:
                    return
                if wait == STOPPED_GRACE and self._silent:
                    self._kill_if_stopped()

    def _kill_if_stopped(self) -> None:
        stopped = _is_stopped(self.proc.pid)
        if not stopped:
            self._stopped_at = None
        elif self._stopped_at is None:
            self._stopped_at = time.monotonic()
        elif time.monotonic() - self._stopped_at >= STOPPED_GRACE:
            log.warning(
                "the fork server (pid %d) is stopped (SIGSTOP) and cannot start workers; "
                "killing it, and its workers with it: their records go to new workers",
                self.proc.pid,
            )
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGKILL)
            self._on_lost()

    # -- what the launcher asks ------------------------------------------------------------

    def preload(self, modules: list[str]) -> None:
        """Ask the server to import ``modules`` (with the caller's import path) ahead."""
        with self._lock:
            self.unanswered += 1
            self.request({"op": "preload", "modules": modules, "sys_path": sys.path})

    def wait_ready(self) -> bool:
        """True once the server has preloaded everything; False if it died or is tainted."""
        self._wait_for(lambda: self.ready, SERVER_START_TIMEOUT)
        return self.ready and not self.lost and self.tainted is None

    def spawn(self, envelopes: list[dict[str, Any]]) -> list[_Forked] | None:
        """The workers asked for, or None if the server is gone before it was asked.

        The requests go out together and the server forks one after another: no round
        trip between two workers, and no wait for the forks here.
        """
        with self._lock:
            where = {"op": "spawn", "cwd": os.getcwd(), "env": dict(os.environ)}
            workers = [_Forked(self) for _ in envelopes]
            # Queued before its request leaves: the reply may be read while the next is sent.
            self.unforked.extend(workers)
            for envelope in envelopes:
                self.request({**envelope, **where})
            return None if self.lost else workers

    def wait_forked(self, worker: _Forked) -> None:
        """Wait until ``worker`` is forked, or the server is gone."""
        self._wait_for(lambda: worker.forked is not None, SERVER_START_TIMEOUT)

    def exit_status(self, worker: _Forked, timeout: float | None) -> int | None:
        """The exit status of ``worker`` (handed over once), waiting up to ``timeout``."""
        self._wait_for(lambda: worker.forked in self.exits, timeout)
        with self._lock:
            if worker.forked is None:
                return worker.returncode  # the server died before forking it
            return self.exits.pop(worker.forked, None)

    def close(self) -> None:
        """Ask the server to stop: it kills what is left, reports, and exits."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
            if not self.live and not self.unforked and self.proc.poll() is None:
                # No worker to report on: do not wait for imports it may still be doing (a
                # caller that started it early, then found the pipeline invalid).
                self.proc.kill()
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


def _fork_caller(reply_w: int) -> tuple[_Child, IO[bytes]]:
    """Fork this process into a fork server (:func:`bootstrap.forked_server`)."""
    requests_r, requests_w = os.pipe()
    for stream in (sys.stdout, sys.stderr):
        # Flushed here, or the child could write what is buffered a second time.
        with contextlib.suppress(AttributeError, OSError, ValueError):
            stream.flush()
    parent = os.getpid()
    # Held until the child ignores them (Ctrl-C is for the caller), and ours get them after.
    held = signal.pthread_sigmask(signal.SIG_BLOCK, bootstrap.CALLERS_SIGNALS)
    pid = os.fork()
    if pid == 0:
        bootstrap.forked_server(requests_r, reply_w, parent)
    signal.pthread_sigmask(signal.SIG_SETMASK, held)
    os.close(requests_r)
    return _Child(pid), open(requests_w, "wb", buffering=0)


class _Child:
    """A process forked from ours: as much of :class:`subprocess.Popen` as the server needs."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        # Readable once the child has ended; None where the kernel has no pidfd_open
        # (Linux before 5.3, or under valgrind): wait() then looks with waitpid instead.
        self._exited: int | None = None
        with contextlib.suppress(OSError):
            self._exited = os.pidfd_open(pid)

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
                if self._exited is not None:
                    os.close(self._exited)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None and self._exited is not None:
            readable, _, _ = select.select([self._exited], [], [], timeout)
            if not readable:
                raise subprocess.TimeoutExpired(f"fork server {self.pid}", timeout or 0.0)
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = 0.001
        while (code := self.poll()) is None:  # no pidfd: look again, less often each time
            if deadline is not None and time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(f"fork server {self.pid}", timeout or 0.0)
            time.sleep(pause)
            pause = min(pause * 2, 0.05)
        return code

    def kill(self) -> None:
        if self.poll() is None:
            os.kill(self.pid, signal.SIGKILL)


def _is_stopped(pid: int) -> bool:
    """Whether process ``pid`` is stopped by a signal (state T in /proc)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[1].split()[0] == b"T"
    except (OSError, IndexError):
        return False


def _caller_stderr() -> int:
    """Our stderr's descriptor, for a child's stdout (so it never mixes into our output)."""
    try:
        if sys.__stderr__ is not None:
            return sys.__stderr__.fileno()
    except (AttributeError, OSError, ValueError):
        pass
    return subprocess.DEVNULL
