"""Stages the engine tests run in real worker processes."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

from pydantic import BaseModel, Field

import stageflow


class Line(BaseModel):
    id: str
    text: str


class Words(BaseModel):
    id: str
    words: list[str]


class Count(BaseModel):
    id: str
    words: int


class Total(BaseModel):
    id: str
    total: int


class SplitConfig(BaseModel):
    lowercase: bool = False
    crash_on: str | None = Field(default=None, description="SIGKILL the worker on this text")
    fail_on: str | None = Field(default=None, description="raise on this text")
    hang_on: str | None = Field(default=None, description="sleep forever on this text")
    hang_marker: str | None = Field(
        default=None, description="when hanging, first create the file <hang_marker>.<pid>"
    )
    pause: float = Field(default=0.0, description="seconds to sleep per record, to slow a run")
    gate: str | None = Field(
        default=None, description="on the text 'gated', wait (up to 60 s) until this file exists"
    )


class Split(stageflow.Stage):
    """Line -> Words, with switches to misbehave on chosen records."""

    name = "test-split"
    Input = Line
    Output = Words
    Config = SplitConfig

    def process(self, item: Line) -> Words:
        config = self.config
        if item.text == config.crash_on:
            os.kill(os.getpid(), signal.SIGKILL)
        if item.text == config.fail_on:
            raise RuntimeError(f"cannot split {item.text!r}")
        if item.text == config.hang_on:
            if config.hang_marker:
                with open(f"{config.hang_marker}.{os.getpid()}", "w"):
                    pass
            # A careless stage that swallows every Exception: the timeout must still get through.
            with contextlib.suppress(Exception):
                time.sleep(3600)
        if config.pause:
            time.sleep(config.pause)
        if item.text == "gated" and config.gate:
            deadline = time.monotonic() + 60
            while not os.path.exists(config.gate):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{config.gate} never appeared")
                time.sleep(0.01)
        text = item.text.lower() if config.lowercase else item.text
        return Words(id=item.id, words=text.split())


class CountWords(stageflow.Stage):
    """Words -> Count."""

    name = "test-count"
    Input = Words
    Output = Count

    def process(self, item: Words) -> Count:
        return Count(id=item.id, words=len(item.words))


class FanOut(stageflow.Stage):
    """Words -> one Line per word (a generator)."""

    name = "test-fanout"
    Input = Words
    Output = Line

    def process(self, item: Words) -> Iterator[Line]:
        for index, word in enumerate(item.words):
            yield Line(id=f"{item.id}.{index}", text=word)


class DropEmpty(stageflow.Stage):
    """Words -> Words, dropping records without words (returns None)."""

    name = "test-drop-empty"
    Input = Words
    Output = Words

    def process(self, item: Words) -> Words | None:
        return item if item.words else None


class Sum(stageflow.Stage):
    """Count -> nothing per record; one Total per worker at the end (finish)."""

    name = "test-sum"
    Input = Count
    Output = Total

    def __init__(self, config: BaseModel | None = None) -> None:
        super().__init__(config)
        self.setups = 0
        self.total = 0

    def setup(self) -> None:
        self.setups += 1

    def process(self, item: Count) -> None:
        self.total += item.words
        return None

    def finish(self) -> Total:
        # The id tells how often setup() ran in this worker, so a test can check "once".
        return Total(id=f"sum-{os.getpid()}-setups-{self.setups}", total=self.total)


class Explode(stageflow.Stage):
    """Line -> Line: a fan-out of `n` records from each input, n given in the text."""

    name = "test-explode"
    Input = Line
    Output = Line

    def process(self, item: Line) -> Iterator[Line]:
        for index in range(int(item.text)):
            yield Line(id=f"{item.id}.{index}", text=str(index))


class Pid(BaseModel):
    id: str
    pid: int


class WhoAmIConfig(BaseModel):
    pause: float = Field(default=0.0, description="seconds to sleep per record, to slow a run")


class WhoAmI(stageflow.Stage):
    """Line -> Pid: which worker process handled each record."""

    name = "test-whoami"
    Input = Line
    Output = Pid
    Config = WhoAmIConfig

    def process(self, item: Line) -> Pid:
        if self.config.pause:
            time.sleep(self.config.pause)
        return Pid(id=item.id, pid=os.getpid())


class BrokenSetup(stageflow.Stage):
    """A stage whose setup() always fails, as with a missing resource."""

    name = "test-broken-setup"
    Input = Line
    Output = Line

    def setup(self) -> None:
        raise RuntimeError("the model file models/ner.bin is missing")

    def process(self, item: Line) -> Line:
        return item


class FirstOnlyConfig(BaseModel):
    claim: str = Field(description="a file the first worker creates; later ones fail to start")
    pause: float = 0.0


class FirstOnly(stageflow.Stage):
    """Line -> Pid: only the first worker's setup() succeeds, as with a licence for one seat."""

    name = "test-first-only"
    Input = Line
    Output = Pid
    Config = FirstOnlyConfig

    def setup(self) -> None:
        try:
            os.close(os.open(self.config.claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            raise RuntimeError("the only seat is taken") from None

    def process(self, item: Line) -> Pid:
        time.sleep(self.config.pause)
        return Pid(id=item.id, pid=os.getpid())


class Stamped(BaseModel):
    id: str
    first_pid: int


class Pids(BaseModel):
    id: str
    first_pid: int
    second_pid: int


class StampPid(stageflow.Stage):
    """Line -> Stamped: the process that ran the first stage."""

    name = "test-stamp-pid"
    Input = Line
    Output = Stamped

    def process(self, item: Line) -> Stamped:
        return Stamped(id=item.id, first_pid=os.getpid())


class SecondPid(stageflow.Stage):
    """Stamped -> Pids: and the process that ran the second, to see whether they were fused."""

    name = "test-second-pid"
    Input = Stamped
    Output = Pids

    def process(self, item: Stamped) -> Pids:
        return Pids(id=item.id, first_pid=item.first_pid, second_pid=os.getpid())


class SlowSetupConfig(BaseModel):
    seconds: float = 40.0
    marker: str | None = Field(default=None, description="file created when setup() begins")
    exit_seconds: float = Field(default=0.0, description="seconds the worker takes to exit")
    exit_marker: str | None = Field(default=None, description="file created as it exits")


class SlowSetup(stageflow.Stage):
    """Line -> Line, with a setup() that takes ``seconds`` (loading a big model, say), and a
    worker that takes ``exit_seconds`` to exit once told to."""

    name = "test-slow-setup"
    Input = Line
    Output = Line
    Config = SlowSetupConfig

    def setup(self) -> None:
        if self.config.marker:
            with open(f"{self.config.marker}.{os.getpid()}", "w"):
                pass
        time.sleep(self.config.seconds)
        if self.config.exit_seconds:
            from twisted.internet import reactor

            reactor.addSystemEventTrigger("before", "shutdown", self._exit_slowly)  # type: ignore[attr-defined]

    def _exit_slowly(self) -> None:
        if self.config.exit_marker:
            Path(f"{self.config.exit_marker}.{os.getpid()}").touch()
        time.sleep(self.config.exit_seconds)

    def process(self, item: Line) -> Line:
        return item


class RelayConfig(BaseModel):
    hang_on: str | None = Field(default=None, description="sleep `hang_for` seconds on this id")
    hang_for: float = 0.0


class Relay(stageflow.Stage):
    """Line -> the same Line: a stateless hop, with a switch to stall on one record."""

    name = "test-relay"
    Input = Line
    Output = Line
    Config = RelayConfig

    def process(self, item: Line) -> Line:
        if item.id == self.config.hang_on:
            time.sleep(self.config.hang_for)
        return item


class TallyConfig(BaseModel):
    crash_after: int = Field(default=0, description="SIGKILL the worker after this many records")
    crash_marker: str | None = Field(
        default=None, description="crash only while this file is missing, and create it first"
    )


class Tally(stageflow.Stage):
    """Line -> one Total per distinct text at the end: a per-key count kept for finish()."""

    name = "test-tally"
    Input = Line
    Output = Total
    Config = TallyConfig

    def __init__(self, config: BaseModel | None = None) -> None:
        super().__init__(config)
        self.counts: dict[str, int] = {}
        self.seen = 0

    def process(self, item: Line) -> None:
        self.counts[item.text] = self.counts.get(item.text, 0) + 1
        marker = self.config.crash_marker
        self.seen += 1
        if marker and self.seen == self.config.crash_after:
            # Made atomically: two workers that get here together must not both crash.
            try:
                os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                return
            os.kill(os.getpid(), signal.SIGKILL)

    def finish(self) -> Iterator[Total]:
        for text, count in self.counts.items():
            yield Total(id=text, total=count)


class User(BaseModel):
    name: str


class Event(BaseModel):
    id: str
    user: User | None = None


class PerUser(stageflow.Stage):
    """Event -> Event, marked stateful without a finish(): keyed by a nested field."""

    name = "test-per-user"
    Input = Event
    Output = Event

    def process(self, item: Event) -> Event:
        return item


class SnapTally(Tally):
    """Tally with snapshot()/restore(): its counts survive the death of its worker."""

    name = "test-snap-tally"

    def snapshot(self) -> bytes:
        return json.dumps(self.counts).encode()

    def restore(self, state: bytes) -> None:
        self.counts = json.loads(state)


class Reading(BaseModel):
    id: str
    value: float


class ScaleConfig(BaseModel):
    factor: float = 1.0


class Scale(stageflow.Stage):
    """Reading -> Reading, the value multiplied by `factor` (1e308 * 10 overflows to inf)."""

    name = "test-scale"
    Input = Reading
    Output = Reading
    Config = ScaleConfig

    def process(self, item: Reading) -> Reading:
        return Reading(id=item.id, value=item.value * self.config.factor)


class DoomConfig(BaseModel):
    marker: str = Field(description="created when the worker dies; later setup()s fail")


class Doomed(stageflow.Stage):
    """Line -> Line; on the text "die" the worker is killed, and no replacement can start
    until the file <marker>.fixed exists (a resource lost for good, e.g. a GPU)."""

    name = "test-doomed"
    Input = Line
    Output = Line
    Config = DoomConfig

    def setup(self) -> None:
        marker = self.config.marker
        if os.path.exists(marker) and not os.path.exists(f"{marker}.fixed"):
            raise RuntimeError("the device this stage needs is gone")

    def process(self, item: Line) -> Line:
        if item.text == "die" and not os.path.exists(self.config.marker):
            with open(self.config.marker, "w"):
                pass
            os.kill(os.getpid(), signal.SIGKILL)
        return item


class HeldSetupConfig(BaseModel):
    gate: str = Field(description="a folder: the first worker goes on, others wait for gate/open")


class HeldSetup(stageflow.Stage):
    """Line -> Line; only the first worker's setup() returns at once, the others' once the
    file ``gate/open`` exists (each then writes ``gate/released.PID``)."""

    name = "test-held-setup"
    Input = Line
    Output = Line
    Config = HeldSetupConfig

    def setup(self) -> None:
        gate = Path(self.config.gate)
        try:
            os.close(os.open(gate / "first", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            return
        except FileExistsError:
            pass
        deadline = time.monotonic() + 30.0
        while not (gate / "open").exists():
            if time.monotonic() > deadline:
                raise RuntimeError(f"{gate / 'open'} did not appear within 30s")
            time.sleep(0.01)
        (gate / f"released.{os.getpid()}").touch()

    def process(self, item: Line) -> Line:
        return item
