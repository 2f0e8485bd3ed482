"""Who the workers are and whether they are alive: the coordinator's table of members.

A member enters the table when a launcher starts it (or, for a worker that joins from
elsewhere, when it says hello) and leaves it when it is lost: its process ended, or it sent
nothing for ``heartbeat_timeout``. That table is the only truth about who exists; dispatch,
the end of stream and the pool act on what :meth:`Membership.lost` reports.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from stageflow.engine import control, wire
from stageflow.engine.launcher import WorkerProcess

__all__ = ["Member", "Membership"]

log = logging.getLogger("stageflow.engine")


@dataclass(eq=False)
class Member:
    """One worker process, from its start until it is lost or has exited."""

    key: str
    stage: int
    slot: int
    name: str  # "stage#slot", for people
    process: WorkerProcess | None
    current_path: str | None
    started: float
    pid: int | None = None
    host: str | None = None
    address: str | None = None
    registered: bool = False
    ready: bool = False
    retiring: bool = False
    finished: bool = False
    failure: str | None = None
    heard: float = 0.0
    current: tuple[int, int] | None = None
    current_for: float = 0.0
    reported_at: float = 0.0  # the current record's elapsed time when last logged as stuck
    processed: int = 0
    #: Joined from another host: not our process, so never killed, only forgotten.
    remote: bool = False
    #: The CURVE public key its data socket serves with (a joined worker's).
    public: bytes | None = None

    @property
    def identity(self) -> bytes:
        return self.key.encode()


class Membership:
    """The members, their registration, their heartbeats and their loss."""

    def __init__(self, secret: bytes, stage_names: list[str], heartbeat_timeout: float) -> None:
        self.secret = secret
        self.stage_names = stage_names
        self.timeout = heartbeat_timeout
        self.members: dict[bytes, Member] = {}

    def add(self, member: Member) -> None:
        member.heard = time.monotonic()
        self.members[member.identity] = member

    def remove(self, member: Member) -> None:
        self.members.pop(member.identity, None)

    def of_stage(self, stage: int) -> list[Member]:
        return [m for m in self.members.values() if m.stage == stage]

    def hello(self, identity: bytes, parts: list[bytes]) -> Member | None:
        """Register the worker saying hello; None if it is unknown, forged or refused."""
        info = control.decode_hello(parts, self.secret)
        member = self.members.get(identity)
        if info is None or member is None or info.get("key") != member.key:
            log.warning("ignored a registration that is not from a worker of this run")
            return None
        member.heard = time.monotonic()
        member.pid = info.get("pid")
        member.host = info.get("host")
        version = info.get("wire")
        if version != wire.VERSION:
            why = (
                f"it speaks wire format version {version} and this coordinator version "
                f"{wire.VERSION}; install the same stageflow version for both"
            )
            log.error("refused worker %s (pid %s): %s", member.name, member.pid, why)
            member.failure = f"was refused: {why}"
            return None
        member.address = info.get("address")
        member.registered = True
        return member

    def heard(self, identity: bytes, message: dict[str, Any]) -> Member | None:
        """Note that ``identity`` spoke; return its member if it is a registered one."""
        member = self.members.get(identity)
        if member is None or not member.registered:
            return None
        member.heard = time.monotonic()
        if message["t"] == "beat":
            current = message.get("cur")
            member.current = (current[0], current[1]) if current else None
            member.current_for = float(message.get("for", 0.0)) if current else 0.0
            if current is None:
                member.reported_at = 0.0
        return member

    def lost(self, now: float) -> list[tuple[Member, str]]:
        """Members whose process ended or whose heartbeats stopped, with the reason."""
        gone = []
        for member in list(self.members.values()):
            code = member.process.poll() if member.process is not None else None
            if code is not None:
                gone.append((member, f"exited with status {code}"))
            elif (member.registered or member.remote) and now - member.heard > self.timeout:
                silent = now - member.heard
                gone.append((member, f"sent no heartbeat for {silent:.1f}s"))
                if member.process is not None:
                    member.process.kill()
        for member, _ in gone:
            self.remove(member)
        return gone

    def stuck(self, threshold: float) -> list[Member]:
        """Members with a record inside process() for another ``threshold`` seconds."""
        due = []
        for member in self.members.values():
            if member.current is None or member.current_for < threshold:
                continue
            if member.current_for - member.reported_at >= threshold or not member.reported_at:
                member.reported_at = member.current_for
                due.append(member)
        return due
