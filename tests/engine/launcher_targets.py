"""Targets the launcher tests run in worker processes instead of the real worker.

Each takes the settings dict and returns the exit status, like ``run_worker``.
"""

from __future__ import annotations

import gc
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

#: Modules a fork-server child finds already imported; a fresh interpreter has none of them.
PRELOADED = ("stageflow.engine.worker", "twisted.internet.epollreactor", "pydantic", "zmq")


def report(settings: dict[str, Any]) -> int:
    """Write what this process sees to ``settings["out"]``; exit with ``settings["code"]``."""
    facts = {
        "pid": os.getpid(),
        "ppid": os.getppid(),
        "settings": settings,
        "preloaded": [name for name in PRELOADED if name in sys.modules],
        "found": [name for name in settings.get("look_for", ()) if name in sys.modules],
        "fds": sorted(int(fd) for fd in os.listdir("/proc/self/fd")),
        "cwd": os.getcwd(),
        "env": os.environ.get("LAUNCHER_TEST_VAR"),
        "sigint_ignored": signal.getsignal(signal.SIGINT) is signal.SIG_IGN,
        "collecting": gc.isenabled(),
    }
    partial = Path(settings["out"] + ".partial")
    partial.write_text(json.dumps(facts))
    partial.rename(settings["out"])
    print(f"report target {os.getpid()} on stdout", flush=True)
    return int(settings.get("code", 0))


def sleep(settings: dict[str, Any]) -> int:
    """Say we started (file ``settings["out"]``), then wait for a signal for ever."""
    Path(settings["out"]).write_text(str(os.getpid()))
    while True:
        signal.pause()


def reactor_and_zmq(settings: dict[str, Any]) -> int:
    """Install the epoll reactor, bind a PULL socket and tell ``settings["reply"]`` its port."""
    from twisted.internet import epollreactor

    epollreactor.install()  # type: ignore[no-untyped-call]
    import zmq
    from twisted.internet import reactor

    context = zmq.Context()
    inbox = context.socket(zmq.PULL)
    inbox.bind("tcp://127.0.0.1:*")
    out = context.socket(zmq.PUSH)
    out.connect(settings["reply"])

    def announce() -> None:
        out.send_json({"pid": os.getpid(), "bound": inbox.getsockopt_string(zmq.LAST_ENDPOINT)})
        reactor.stop()  # type: ignore[attr-defined]

    reactor.callLater(0, announce)  # type: ignore[attr-defined]
    reactor.run(installSignalHandlers=False)  # type: ignore[attr-defined]
    out.close(linger=5000)
    inbox.close(linger=0)
    context.term()
    return 0


def by_value(settings: dict[str, Any]) -> int:
    """Rebuild the class shipped in the settings and write what one of its instances says.

    A stand-in for robust's cloudpickle format: the class travels as source text, which is
    enough to show that a launcher passes a class the server never imported through to the
    worker untouched.
    """
    namespace: dict[str, Any] = {}
    exec(settings["class_source"], namespace)  # the test's own source text
    instance = namespace[settings["class_name"]]()
    Path(settings["out"]).write_text(instance.greet())
    return 0


def lazy_import(settings: dict[str, Any]) -> int:
    """Import ``settings["module"]`` (not preloaded anywhere) and write its ``VALUE``."""
    import importlib

    module = importlib.import_module(settings["module"])
    Path(settings["out"]).write_text(str(module.VALUE))
    return 0


def cookie_jar(settings: dict[str, Any]) -> int:
    """Write which modules were loaded before http.cookiejar's first use, and what it and
    Twisted's TCP module (also deferred) give when used."""
    loaded = [name for name in ("twisted.python.compat", "urllib.request") if name in sys.modules]
    from http.cookiejar import CookieJar

    from twisted.internet.tcp import Port

    facts = {"loaded": loaded, "jar": type(CookieJar()).__name__, "tcp": Port.__name__}
    Path(settings["out"]).write_text(json.dumps(facts))
    return 0
