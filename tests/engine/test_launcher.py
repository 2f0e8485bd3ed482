"""Launchers start real worker processes: settings in, Popen-style statuses out, nothing left."""

from __future__ import annotations

import inspect
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import zmq

from stageflow.engine.launcher import ForkServerLauncher, Launcher, SubprocessLauncher
from tests.engine.conftest import wait_until
from tests.engine.launcher_targets import PRELOADED

ROOT = Path(__file__).resolve().parents[2]
TARGETS = "tests.engine.launcher_targets"
DEADLINE = 30.0


def make(kind: str, target: str, **kwargs: Any) -> Launcher:
    if kind == "fork":
        return ForkServerLauncher(target=f"{TARGETS}:{target}", **kwargs)
    return SubprocessLauncher(target=f"{TARGETS}:{target}")


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def started(path: Path) -> bool:
    return path.exists() and path.stat().st_size > 0


@pytest.fixture(params=["fork", "subprocess"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def sleepers(kind: str, tmp_path: Path) -> Iterator[tuple[Launcher, list[Any]]]:
    """Three workers of the ``sleep`` target, each known to be running."""
    launcher = make(kind, "sleep")
    try:
        procs = [launcher.spawn({"out": str(tmp_path / f"s{i}")}) for i in range(3)]
        assert wait_until(lambda: all(started(tmp_path / f"s{i}") for i in range(3)), DEADLINE)
        yield launcher, procs
    finally:
        launcher.close()


def test_workers_run_the_target_with_their_settings(
    kind: str, tmp_path: Path, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each worker gets its own settings (even large ones), the caller's cwd and environment,
    only fds 0-2, SIGINT ignored, its stdout on the caller's stderr, and exits with the status
    the target returned."""
    launcher = make(kind, "report")
    monkeypatch.setenv("LAUNCHER_TEST_VAR", "set after the launcher started")
    monkeypatch.chdir(tmp_path)
    blob = "x" * 200_000  # larger than a pipe's buffer
    try:
        procs = [
            launcher.spawn({"out": str(tmp_path / f"r{i}"), "code": i, "blob": blob})
            for i in range(4)
        ]
        assert [proc.wait(DEADLINE) for proc in procs] == [0, 1, 2, 3]
        assert [proc.returncode for proc in procs] == [0, 1, 2, 3]
    finally:
        launcher.close()
    for i, proc in enumerate(procs):
        facts = json.loads((tmp_path / f"r{i}").read_text())
        assert facts["pid"] == proc.pid
        assert facts["settings"] == {"out": str(tmp_path / f"r{i}"), "code": i, "blob": blob}
        assert facts["cwd"] == str(tmp_path)
        assert facts["env"] == "set after the launcher started"
        assert facts["sigint_ignored"]
        assert len(facts["fds"]) == 4  # 0, 1, 2 and the one listing /proc/self/fd
    captured = capfd.readouterr()
    assert "on stdout" not in captured.out
    assert sum(f"report target {proc.pid} on stdout" in captured.err for proc in procs) == 4


def test_a_failing_target_exits_1_with_its_traceback(
    kind: str, capfd: pytest.CaptureFixture[str]
) -> None:
    """A target that cannot be found exits with status 1 and says why on stderr."""
    with make(kind, "no_such_target") as launcher:
        assert launcher.spawn({}).wait(DEADLINE) == 1
    assert "no_such_target" in capfd.readouterr().err


def test_signal_deaths_are_reported_like_popen(sleepers: tuple[Launcher, list[Any]]) -> None:
    """kill -9 from outside and kill() both give -9; a live worker polls None and times out."""
    _, (outside, killed, running) = sleepers
    assert outside.poll() is None
    os.kill(outside.pid, signal.SIGKILL)
    assert outside.wait(DEADLINE) == -signal.SIGKILL
    killed.kill()
    assert killed.wait(DEADLINE) == -signal.SIGKILL
    killed.kill()  # already dead: nothing happens
    with pytest.raises(subprocess.TimeoutExpired):
        running.wait(0.05)
    os.kill(running.pid, signal.SIGTERM)
    assert running.wait(DEADLINE) == -signal.SIGTERM
    assert running.poll() == -signal.SIGTERM


def test_close_leaves_no_process(sleepers: tuple[Launcher, list[Any]]) -> None:
    """close() kills every worker still running (and the fork server) and reports -9."""
    launcher, procs = sleepers
    server = launcher.server_pid if isinstance(launcher, ForkServerLauncher) else None
    launcher.close()
    assert [proc.poll() for proc in procs] == [-signal.SIGKILL] * 3
    pids = [proc.pid for proc in procs] + ([server] if server else [])
    assert wait_until(lambda: not any(alive(pid) for pid in pids), DEADLINE)


CALLER = """
import json, sys
from stageflow.engine.launcher import ForkServerLauncher, SubprocessLauncher
kind, target, out = sys.argv[1:]
launcher = ForkServerLauncher(target=target) if kind == "fork" else SubprocessLauncher(target)
procs = [launcher.spawn({"out": f"{out}{i}"}) for i in range(3)]
server = launcher.server_pid if kind == "fork" else None
print(json.dumps({"workers": [p.pid for p in procs], "server": server}), flush=True)
sys.stdin.read()
"""


def test_kill9_of_the_caller_leaves_no_process(kind: str, tmp_path: Path) -> None:
    """SIGKILL of the process that owns a launcher ends its fork server and every worker."""
    caller = subprocess.Popen(
        [sys.executable, "-c", CALLER, kind, f"{TARGETS}:sleep", str(tmp_path / "s")],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert caller.stdout is not None
        pids = json.loads(caller.stdout.readline())
        assert wait_until(lambda: all(started(tmp_path / f"s{i}") for i in range(3)), DEADLINE)
        everyone = pids["workers"] + ([pids["server"]] if pids["server"] else [])
        assert all(alive(pid) for pid in everyone)
    finally:
        caller.kill()
        caller.wait()
        assert caller.stdin is not None and caller.stdout is not None
        caller.stdin.close()
        caller.stdout.close()
    assert wait_until(lambda: not any(alive(pid) for pid in everyone), DEADLINE)


def test_forked_worker_installs_its_own_reactor_and_zmq_context() -> None:
    """Workers forked from the server install the epoll reactor and bind ZeroMQ sockets: no
    reactor or context was inherited."""
    context = zmq.Context()
    replies = context.socket(zmq.PULL)
    replies.bind("tcp://127.0.0.1:*")
    address = replies.getsockopt_string(zmq.LAST_ENDPOINT)
    try:
        with ForkServerLauncher(target=f"{TARGETS}:reactor_and_zmq") as launcher:
            procs = [launcher.spawn({"reply": address}) for _ in range(2)]
            assert replies.poll(DEADLINE * 1000)
            got = [replies.recv_json()]
            assert replies.poll(DEADLINE * 1000)
            got.append(replies.recv_json())
            assert [proc.wait(DEADLINE) for proc in procs] == [0, 0]
    finally:
        replies.close(linger=0)
        context.term()
    assert sorted(message["pid"] for message in got) == sorted(proc.pid for proc in procs)
    assert all(message["bound"].startswith("tcp://127.0.0.1:") for message in got)


def test_class_shipped_by_value_and_module_imported_lazily(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A class the server never imported reaches the worker by value in the settings, and a
    module on a path added after the server started is imported by the worker itself."""

    class Greeter:
        def greet(self) -> str:
            return "hello from a class defined in a test"

    source = textwrap.dedent(inspect.getsource(Greeter))
    launcher = make(kind, "by_value")
    try:
        out = tmp_path / "greeting"
        shipped = {"class_source": source, "class_name": "Greeter", "out": str(out)}
        assert launcher.spawn(shipped).wait(DEADLINE) == 0
        assert out.read_text() == Greeter().greet()
    finally:
        launcher.close()
    (tmp_path / "late_module.py").write_text("VALUE = 42\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with make(kind, "lazy_import") as launcher:
        out = tmp_path / "value"
        assert launcher.spawn({"module": "late_module", "out": str(out)}).wait(DEADLINE) == 0
        assert out.read_text() == "42"


def test_many_spawns_reuse_one_preloaded_server(tmp_path: Path) -> None:
    """Forty spawns in a row all fork from the same server, find everything already imported,
    and leave it with no zombie and no extra file descriptor; closing it leaves the caller
    with the descriptors it had."""
    caller_fds = len(os.listdir("/proc/self/fd"))
    with ForkServerLauncher(target=f"{TARGETS}:report", preload=["stageflow_seed"]) as launcher:
        first = launcher.spawn({"out": str(tmp_path / "first")})
        assert first.wait(DEADLINE) == 0
        server = psutil.Process(launcher.server_pid)
        fds = server.num_fds()
        procs = [launcher.spawn({"out": str(tmp_path / f"r{i}")}) for i in range(40)]
        assert [proc.wait(DEADLINE) for proc in procs] == [0] * 40
        assert launcher.server_pid == server.pid
        assert server.num_fds() == fds
        assert server.children() == []  # every child reaped
    assert len(os.listdir("/proc/self/fd")) == caller_fds
    for i in range(40):
        facts = json.loads((tmp_path / f"r{i}").read_text())
        assert facts["ppid"] == server.pid
        assert facts["preloaded"] == list(PRELOADED)


def test_a_signal_to_the_process_group_leaves_the_server_up(tmp_path: Path) -> None:
    """SIGTERM and SIGINT reach the server without ending it (its caller decides); a worker
    forked afterwards still dies of SIGTERM like any process."""
    with ForkServerLauncher(target=f"{TARGETS}:sleep") as launcher:
        first = launcher.spawn({"out": str(tmp_path / "a")})
        assert wait_until(lambda: started(tmp_path / "a"), DEADLINE)
        server = launcher.server_pid
        os.kill(server, signal.SIGTERM)
        os.kill(server, signal.SIGINT)
        worker = launcher.spawn({"out": str(tmp_path / "b")})
        assert launcher.server_pid == server and alive(server)
        assert wait_until(lambda: started(tmp_path / "b"), DEADLINE)
        os.kill(worker.pid, signal.SIGTERM)
        assert worker.wait(DEADLINE) == -signal.SIGTERM
        assert first.poll() is None


def test_a_dead_fork_server_is_replaced(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """kill -9 of the server ends its workers (reported -9) and the next spawn starts a new
    server, saying so in the log."""
    with ForkServerLauncher(target=f"{TARGETS}:sleep") as launcher:
        worker = launcher.spawn({"out": str(tmp_path / "a")})
        assert wait_until(lambda: started(tmp_path / "a"), DEADLINE)
        old = launcher.server_pid
        os.kill(old, signal.SIGKILL)
        assert worker.wait(DEADLINE) == -signal.SIGKILL
        assert wait_until(lambda: not alive(worker.pid), DEADLINE)
        with caplog.at_level(logging.WARNING, "stageflow.engine"):
            again = launcher.spawn({"out": str(tmp_path / "b")})
        assert launcher.server_pid != old
        assert f"fork server (pid {old}) ended" in caplog.text
        assert wait_until(lambda: started(tmp_path / "b"), DEADLINE)
        assert again.poll() is None


SPOILERS = {
    "reactor": "from twisted.internet import reactor\n",
    "thread": "import threading, time\nthreading.Thread(target=time.sleep, args=(3600,), "
    "daemon=True).start()\n",
}


@pytest.mark.parametrize("spoiler", sorted(SPOILERS))
def test_a_stage_module_that_spoils_forking_is_not_preloaded(
    spoiler: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A stage module that installs a reactor or starts a thread when imported is left to the
    workers, which still get a clean process; the log names the module."""
    (tmp_path / "reactor_at_import.py").write_text(SPOILERS[spoiler])
    monkeypatch.syspath_prepend(str(tmp_path))
    context = zmq.Context()
    replies = context.socket(zmq.PULL)
    replies.bind("tcp://127.0.0.1:*")
    try:
        target = f"{TARGETS}:reactor_and_zmq"
        with ForkServerLauncher(["reactor_at_import"], target) as launcher:
            with caplog.at_level(logging.WARNING, "stageflow.engine"):
                proc = launcher.spawn({"reply": replies.getsockopt_string(zmq.LAST_ENDPOINT)})
            assert replies.poll(DEADLINE * 1000)
            assert replies.recv_json()["pid"] == proc.pid
            assert proc.wait(DEADLINE) == 0
    finally:
        replies.close(linger=0)
        context.term()
    assert "stage module reactor_at_import starts a Twisted reactor" in caplog.text


def test_modules_named_later_are_preloaded_and_spawn_all_forks_each(tmp_path: Path) -> None:
    """Modules given to prepare() after the server started are imported by the server before
    it forks (the workers find them loaded), and spawn_all starts one worker per settings
    dict, in order, each a child of the server."""
    with ForkServerLauncher(target=f"{TARGETS}:report") as launcher:
        launcher.prepare(["stageflow_seed.stages"])
        outs = [tmp_path / f"w{i}" for i in range(5)]
        procs = launcher.spawn_all(
            [{"out": str(out), "look_for": ["stageflow_seed.stages"]} for out in outs]
        )
        assert [proc.wait(DEADLINE) for proc in procs] == [0] * 5
        server = launcher.server_pid
    facts = [json.loads(out.read_text()) for out in outs]
    assert [fact["pid"] for fact in facts] == [proc.pid for proc in procs]
    assert [fact["settings"]["out"] for fact in facts] == [str(out) for out in outs]
    assert all(fact["ppid"] == server for fact in facts)
    assert all(fact["found"] == ["stageflow_seed.stages"] for fact in facts)


def test_the_server_defers_what_twisted_imports_for_the_web(tmp_path: Path) -> None:
    """A forked worker has Twisted's compat module, whose http.cookiejar (and urllib.request
    with it) has not run yet, and works when first used, as does Twisted's TCP module."""
    with ForkServerLauncher(target=f"{TARGETS}:cookie_jar") as launcher:
        out = tmp_path / "facts"
        assert launcher.spawn({"out": str(out)}).wait(DEADLINE) == 0
    facts = json.loads(out.read_text())
    assert facts == {"loaded": ["twisted.python.compat"], "jar": "CookieJar", "tcp": "Port"}


FORKING_CALLER = """
import gc, json, os, select, sys, threading
from stageflow._collector import starting
from stageflow.engine.launcher import ForkServerLauncher
target, out, second_thread = sys.argv[1:]
if second_thread == "yes":
    threading.Thread(target=threading.Event().wait, daemon=True).start()
kept_r, kept_w = os.pipe()  # the caller's own: a forked server must not hold it open
with starting():  # as `stageflow run` makes its server
    launcher = ForkServerLauncher(target=target, fork=True)
assert gc.isenabled()
os.close(kept_w)
readable, _, _ = select.select([kept_r], [], [], 30)
code = launcher.spawn({"out": out}).wait(30)
forked = open(f"/proc/{launcher.server_pid}/cmdline", "rb").read() == open(
    "/proc/self/cmdline", "rb"
).read()
print(json.dumps({"eof": bool(readable) and os.read(kept_r, 1) == b"", "code": code,
                  "server": launcher.server_pid, "forked": forked}), flush=True)
launcher.close()
"""


@pytest.mark.parametrize("second_thread", ["no", "yes"])
def test_fork_makes_the_server_from_the_caller_when_it_is_safe(
    second_thread: str, tmp_path: Path
) -> None:
    """With fork=True a single-threaded caller's server is a fork of the caller (same command
    line), which keeps none of the caller's descriptors (a pipe's end it closes reads end of
    file) and forks working workers; a caller with a second thread gets a started server.
    Made while the caller's collector is paused, the server's workers collect garbage."""
    out = tmp_path / "facts"
    caller = subprocess.run(
        [sys.executable, "-c", FORKING_CALLER, f"{TARGETS}:report", str(out), second_thread],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert caller.returncode == 0, caller.stderr
    facts = json.loads(caller.stdout.splitlines()[-1])
    assert facts["forked"] is (second_thread == "no")
    assert facts["eof"] and facts["code"] == 0
    worker = json.loads(out.read_text())
    assert worker["ppid"] == facts["server"]
    assert worker["collecting"]


def test_a_fork_server_is_waited_for_without_pidfd(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the kernel has no pidfd_open (Linux before 5.3, valgrind), the fork server's
    handle still times out while it runs and gives its exit status once it has ended."""
    from stageflow.engine import launcher

    def no_pidfd(pid: int, flags: int = 0) -> int:
        raise OSError(38, "Function not implemented")

    monkeypatch.setattr(launcher.os, "pidfd_open", no_pidfd)
    release_r, release_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(release_w)
        os.read(release_r, 1)  # until the test lets it end
        os._exit(3)
    os.close(release_r)
    child = launcher._Child(pid)
    try:
        with pytest.raises(subprocess.TimeoutExpired):
            child.wait(0.05)
        assert child.poll() is None
    finally:
        os.close(release_w)
    assert child.wait(DEADLINE) == 3
    assert child.poll() == 3
