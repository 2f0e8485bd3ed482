"""What runs inside the processes a launcher starts: the fork server, and a worker's first steps.

Started by :mod:`stageflow.engine.launcher`, never by hand:

- ``python -m stageflow.engine.bootstrap worker``: one worker in a fresh interpreter. Its
  stdin carries one JSON *envelope* (the target, its settings, the caller's import path) and
  is closed after it.
- ``python -m stageflow.engine.bootstrap fork-server FD PARENT``: imports the engine,
  Twisted's modules, pydantic and pyzmq once (its first request), and the pipeline's stage
  modules when told (a later ``preload``: the caller starts the server before it has read
  the pipeline), then forks a worker per request. Requests (``preload``, ``spawn``,
  ``kill``, ``stop``) arrive as JSON lines on stdin; replies (``ready`` once per
  ``preload``, ``spawned``, ``exit``) leave as JSON lines on the inherited pipe ``FD``.
  The server reaps every child
  and reports its exit status the way :class:`subprocess.Popen` does (negative for a
  signal), since the caller cannot wait for a grandchild.

``stageflow run`` forks the server from its own process instead, first thing (see
:class:`~stageflow.engine.launcher.ForkServerLauncher`'s ``fork``): :func:`forked_server`
then runs in that child, which already holds stageflow and pydantic, instead of a fresh
interpreter importing them.

Lifetime chain: the server dies with the caller (``PR_SET_PDEATHSIG``, and end of file on
its stdin), each worker dies with the server (``PR_SET_PDEATHSIG`` set in the child right
after the fork), so nothing outlives the caller, even after ``kill -9`` of it.

The server never installs a reactor, creates a ZeroMQ context or starts a thread: a forked
child would share the epoll descriptor, the context's threads, or locks held by a thread it
does not have. If a stage module does any of these at import time, the server says so in
its ``ready`` reply and the launcher starts one that does not preload stage modules.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import importlib.util
import json
import os
import select
import signal
import sys
import threading
import traceback
from collections.abc import Callable
from typing import Any, NoReturn

# The package's __init__ loads nothing eagerly, so this costs the worker's start nothing.
from stageflow._collector import starting

#: Imported by the server before any stage module: everything a worker needs to start.
PRELOAD = (
    "stageflow",
    "stageflow.engine.worker",
    "stageflow.transport",
    "twisted.internet.epollreactor",
    "twisted.internet.defer",
    "pydantic",
    "zmq",
)

#: Imported by Twisted at start for what a worker never does, so the server makes them load
#: on first use instead: ``http.cookiejar`` (bound by ``twisted.python.compat``, and bringing
#: urllib.request, http.client and email) and the reactor's own TCP, UDP, Unix-socket and
#: process transports (a worker's sockets are ZeroMQ's). About a sixth of the server's imports.
DEFERRED = (
    "http.cookiejar",
    "twisted.internet.tcp",
    "twisted.internet.udp",
    "twisted.internet.unix",
    "twisted.internet.process",
)

#: Exit status of a child whose target could not be imported or raised.
TARGET_FAILED = 1
#: Signals sent to the whole process group that are for the caller: the server ignores them.
CALLERS_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def die_with_parent(parent: int) -> None:
    """Have the kernel SIGKILL this process when ``parent`` dies (Linux); exit if it has."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # it died before prctl took effect
        os._exit(TARGET_FAILED)


def resolve(target: str) -> Callable[[dict[str, Any]], int]:
    """The function named by ``module:function``."""
    module, _, name = target.partition(":")
    function: Callable[[dict[str, Any]], int] = getattr(importlib.import_module(module), name)
    return function


def run_target(envelope: dict[str, Any]) -> int:
    """Run ``envelope["target"](settings)`` and return the status this process exits with."""
    # Ctrl-C reaches the whole process group; only the caller decides what it means.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.path[:0] = [p for p in envelope.get("sys_path", ()) if p not in sys.path]
    try:
        status = resolve(envelope["target"])(envelope["settings"])
    except SystemExit as exc:
        status = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # noqa: BLE001 - a child reports what killed it, like an interpreter
        traceback.print_exc()
        status = TARGET_FAILED
    with contextlib.suppress(OSError, ValueError):
        sys.stdout.flush()
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.flush()
    return status


def _worker() -> None:
    chunks = []
    while chunk := os.read(0, 1 << 16):
        chunks.append(chunk)
    envelope = json.loads(b"".join(chunks))
    die_with_parent(envelope["parent"])
    _stdin_from_devnull()
    os._exit(run_target(envelope))


def _stdin_from_devnull() -> None:
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)


class _Server:
    """The fork server's loop: requests in on stdin, replies out on ``reply_fd``."""

    def __init__(self, reply_fd: int) -> None:
        self.reply_fd = reply_fd
        self.pid = os.getpid()
        self.children: set[int] = set()
        self.preloaded = False
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)

    def reply(self, message: dict[str, Any]) -> None:
        data = json.dumps(message).encode() + b"\n"
        while data:
            data = data[os.write(self.reply_fd, data) :]

    def preload(self, modules: list[str]) -> dict[str, Any]:
        """Import the engine (the first time), then each module; stop at one that spoils
        forking."""
        failed: dict[str, str] = {}
        engine = () if self.preloaded else PRELOAD
        if not self.preloaded:
            for name in DEFERRED:
                defer_import(name)
        self.preloaded = True
        # The collector is held off for the imports and what they made is frozen, as
        # stageflow._collector explains. Frozen, those objects are shared with every child:
        # their pages stay shared instead of being copied on a child's first collection.
        with starting():
            for name in [*engine, *modules]:
                try:
                    importlib.import_module(name)
                except Exception as exc:  # noqa: BLE001 - the worker imports it again, says why
                    failed[name] = f"{type(exc).__name__}: {exc}"
                if unforkable():
                    return {"tainted": name}
        return {"failed": failed}

    def serve(self) -> None:
        signal.set_wakeup_fd(self.wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        buffer = b""
        while True:
            readable, _, _ = select.select([0, self.wake_r], [], [])
            if self.wake_r in readable:
                while _drain(self.wake_r):
                    pass
                self.reap(os.WNOHANG)
            if 0 in readable:
                chunk = os.read(0, 1 << 16)
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                requests = [request for line in lines if (request := _parse(line))]
                for request in requests:
                    self.handle(request)
                if not chunk or {"op": "stop"} in requests:
                    break  # the caller closed the launcher, or died
        for pid in self.children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.reap(0)

    def handle(self, request: dict[str, Any]) -> None:
        if request["op"] == "stop":
            return
        if request["op"] == "preload":
            sys.path[:0] = [p for p in request["sys_path"] if p not in sys.path]
            self.reply({"ready": os.getpid(), **self.preload(request["modules"])})
            return
        if request["op"] == "kill":
            # Only a child not yet reaped: its pid cannot belong to anyone else yet.
            if request["pid"] in self.children:
                os.kill(request["pid"], request["signal"])
            return
        pid = os.fork()
        if pid == 0:
            status = TARGET_FAILED
            try:
                self.become_child(request)
                status = run_target(request)
            finally:
                os._exit(status)
        self.children.add(pid)
        self.reply({"spawned": pid})

    def become_child(self, request: dict[str, Any]) -> None:
        """Shed the server's state: its parent-death link, signals and descriptors."""
        die_with_parent(self.pid)
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        for fd in (self.wake_r, self.wake_w, self.reply_fd):
            os.close(fd)
        _stdin_from_devnull()
        with contextlib.suppress(OSError):  # gone since: keep the server's, as Popen would
            os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])

    def reap(self, flags: int) -> None:
        """Report every child that ended; with ``flags=0``, wait until none is left."""
        while self.children:
            try:
                pid, status = os.waitpid(-1, flags)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.children.discard(pid)
            self.reply({"exit": pid, "code": os.waitstatus_to_exitcode(status)})


def defer_import(name: str) -> None:
    """Make ``name`` a module that runs its code at its first attribute access (the
    stdlib's :class:`importlib.util.LazyLoader`), unless it is imported already."""
    parent, _, child = name.rpartition(".")
    package = importlib.import_module(parent) if parent else None
    if name in sys.modules:  # its package may have imported it just now
        return
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:
        return
    spec.loader = loader = importlib.util.LazyLoader(spec.loader)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    loader.exec_module(module)
    if package is not None:
        setattr(package, child, module)


def _parse(line: bytes) -> dict[str, Any] | None:
    """One request; None for a line torn by a caller interrupted mid-write (Ctrl-C)."""
    try:
        request: dict[str, Any] = json.loads(line)
    except ValueError:
        return None
    return request


def _drain(fd: int) -> bool:
    try:
        return bool(os.read(fd, 4096))
    except BlockingIOError:
        return False


def unforkable() -> bool:
    """True when this process holds what a forked child must not share: a reactor, a ZeroMQ
    context, or a second thread (whose locks a child could inherit held, for ever)."""
    if "twisted.internet.reactor" in sys.modules or threading.active_count() > 1:
        return True
    zmq = sys.modules.get("zmq")
    return zmq is not None and getattr(zmq.Context, "_instance", None) is not None


def forked_server(requests: int, reply_fd: int, parent: int) -> NoReturn:
    """Serve as the fork server in a child just forked from the caller (the launcher's
    ``fork``), which had imported stageflow and pydantic already: shed the caller's state,
    then serve; never returns.

    The caller flushed its stdio buffers before the fork, and every exit here is
    ``os._exit``, so nothing of the caller's is written twice or finalized (no atexit
    handler runs). Its objects are frozen out of the collector: a finalizer of theirs
    could close a descriptor number that is reused here since. Its descriptors are closed,
    so a pipe or file of the caller's ends when the caller closes it, and the standard
    streams become what a started server's are: requests on stdin, the caller's stderr for
    stdout and stderr.
    """
    status = TARGET_FAILED
    try:
        for signum in CALLERS_SIGNALS:
            signal.signal(signum, signal.SIG_IGN)
        # The caller blocked them around the fork; workers forked from here must get them.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, CALLERS_SIGNALS)
        gc.freeze()
        # The caller forks this server while its collector is held off at its start
        # (stageflow._collector); the server and every worker it forks collect as usual.
        gc.enable()
        os.dup2(requests, 0)
        os.dup2(2, 1)
        keep = {0, 1, 2, reply_fd}
        for name in os.listdir("/proc/self/fd"):
            if int(name) not in keep:
                with contextlib.suppress(OSError):  # the listing's own descriptor
                    os.close(int(name))
        _fork_server(reply_fd, parent)
        status = 0
    except BaseException:  # noqa: BLE001 - nothing above us here: report it, then exit
        traceback.print_exc()
    finally:
        os._exit(status)


def _fork_server(reply_fd: int, parent: int) -> None:
    # A signal to the whole process group is for the caller and its workers; the server
    # ends with the caller (or when told), so restarts and close() keep working meanwhile.
    for signum in CALLERS_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
    die_with_parent(parent)
    _Server(reply_fd).serve()


def main(argv: list[str]) -> None:
    if argv[:1] == ["worker"]:
        _worker()
    elif argv[:1] == ["fork-server"] and len(argv) == 3:
        _fork_server(int(argv[1]), int(argv[2]))
    else:
        sys.exit("stageflow.engine.bootstrap is started by stageflow's launcher, not by hand")


if __name__ == "__main__":
    main(sys.argv[1:])
