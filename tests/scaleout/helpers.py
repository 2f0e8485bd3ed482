"""Helpers of the scale-out tests: records to send, a run consumed on a thread, gates."""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Callable, Iterator
from typing import Any

from stageflow.engine.run import Run
from tests.engine.conftest import wait_until

TOKEN = "stageflow-joined-record-5c1e"


def records(count: int) -> list[dict[str, str]]:
    return [{"id": str(n), "text": f"{TOKEN} w{n}"} for n in range(count)]


def gated(items: list[dict[str, str]], gates: dict[int, Callable[[], None]]) -> Iterator[Any]:
    """The items, calling ``gates[n]`` before item n (run with read_ahead: it may block)."""
    for index, item in enumerate(items):
        if index in gates:
            gates[index]()
        yield item


class Consumer:
    """Iterates a run on a thread, so the test can start workers while it waits for them."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.results: list[Any] = []
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._consume, daemon=True)
        self.thread.start()

    def _consume(self) -> None:
        try:
            self.results.extend(self.run)
        except BaseException as exc:  # noqa: BLE001 - raised again in the test's thread
            self.error = exc

    def address(self) -> str:
        assert wait_until(lambda: self.run.listening is not None, 30), "the run never listened"
        assert self.run.listening is not None
        return self.run.listening

    def finish(self, timeout: float) -> list[Any]:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the run did not end"
        if self.error is not None:
            raise self.error
        return self.results


def joined_ready(run: Run, count: int) -> Callable[[], None]:
    def gate() -> None:
        ready = lambda: sum(w.state == "ready" and "@" in w.name for w in run.workers())  # noqa: E731
        assert wait_until(lambda: ready() >= count, 60), "the joined workers never became ready"

    return gate


def stop_all(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        if process.poll() is None:
            process.kill()
        process.wait(10)
