"""The compiled and the pure-Python receive loops deliver the same, on real sockets."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from typing import Any

import pytest
from twisted.python.failure import Failure

from stageflow.transport import ZmqFactory, ZmqPullConnection, ZmqPushConnection, compiled
from tests.transport.support import BIND_ANY, connect, run_until

BUILT = importlib.util.find_spec("stageflow.transport._recvloop") is not None


class Strict(ZmqPullConnection):
    """Keeps messages, refuses b"bad" (routed), and pauses itself at b"pause"."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.received: list[list[bytes]] = []
        self.failed: list[list[bytes]] = []
        super().__init__(*args, **kwargs)

    def onPull(self, message: list[bytes]) -> None:
        if message == [b"bad"]:
            raise ValueError("refused")
        self.received.append(message)
        if message == [b"pause"]:
            self.pauseProducing()

    def on_message_error(self, message: list[bytes], failure: Failure) -> None:
        self.failed.append(message)


@pytest.mark.parametrize("compiled_loop", [True, False], ids=["compiled", "python"])
def test_loops_deliver_whole_messages_route_errors_and_pause(
    factory: ZmqFactory, reactor: Any, compiled_loop: bool
) -> None:
    """Each loop keeps 2000 mixed messages whole and in order, routes errors, honours pause."""
    if compiled_loop and compiled.read_batch is None:
        pytest.skip("the compiled receive loop was not built here (no Cython or no compiler)")

    class Puller(Strict):
        compiledReceive = compiled_loop
        readBatchSize = 64

    puller = Puller(factory, BIND_ANY)
    assert (puller._compiled_read is not None) is compiled_loop
    pusher = ZmqPushConnection(factory, connect(puller.addresses[0]))
    expected: list[list[bytes]] = []
    for number in range(2000):
        message = [b"%d" % number, b"", b"x" * (number % 7)][: 1 + number % 3]
        expected.append(message)
        pusher.push(message)
        if number == 1000:
            pusher.push(b"bad")
            pusher.push(b"pause")
    run_until(reactor, lambda: puller.received[-1:] == [[b"pause"]])
    held = len(puller.received)
    for _ in range(20):
        reactor.iterate(0)
    assert len(puller.received) == held, "a paused connection went on delivering"
    puller.resumeProducing()
    run_until(reactor, lambda: len(puller.received) == 2001)
    assert [m for m in puller.received if m != [b"pause"]] == expected
    assert puller.failed == [[b"bad"]]


def test_compiled_loop_is_used_when_built() -> None:
    """Where the extension was built, it binds to pyzmq's libzmq and connections use it."""
    if not BUILT:
        pytest.skip("the compiled receive loop was not built here (no Cython or no compiler)")
    assert compiled.read_batch is not None


def test_without_the_extension_the_python_loop_serves() -> None:
    """When the extension cannot be imported, read_batch is None and connections still read."""
    code = (
        "import sys; sys.modules['stageflow.transport._recvloop'] = None\n"
        "from stageflow.transport import compiled, ZmqPullConnection, ZmqFactory\n"
        "assert compiled.read_batch is None\n"
        "from twisted.internet.epollreactor import EPollReactor\n"
        "factory = ZmqFactory(reactor=EPollReactor())\n"
        "assert ZmqPullConnection(factory)._compiled_read is None\n"
        "factory.shutdown()\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
