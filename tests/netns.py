"""Hosts of our own for tests that cross a network: Linux network namespaces on a bridge.

:func:`network` makes a bridge in the root namespace (the coordinator's "host", address
``.1``) and one namespace per extra host, each joined to the bridge by a veth pair and given
the address ``.2``, ``.3``, ... of a private /24. Everything it made is removed when the
``with`` block ends, however it ends, and names carry the test process's pid so parallel or
crashed runs never collide. Needs root (``ip netns``), as in CI.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

_SUBNET = "10.231.{}.{}"


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=30)


def unavailable() -> str | None:
    """Why namespaces cannot be made here, or None when they can."""
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is not installed"
    if os.geteuid() != 0:
        return "network namespaces need root"
    probe = f"sfprobe{os.getpid()}"
    made = _ip("netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"`ip netns add` failed: {made.stderr.strip()}"
    _ip("netns", "del", probe, check=False)
    return None


@dataclass
class Host:
    """One network namespace: a host with its own network stack and one address."""

    name: str
    address: str
    link: str  # the bridge-side end of its veth pair; `down` cuts the host off

    def command(self, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.name, *argv]

    def popen(self, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        return subprocess.Popen(self.command(argv), **kwargs)

    def python(self, *args: str, **kwargs: Any) -> subprocess.Popen[bytes]:
        return self.popen([sys.executable, *args], **kwargs)

    def cut(self) -> None:
        """Take this host's link down, as if its cable were pulled."""
        _ip("link", "set", self.link, "down")

    def mend(self) -> None:
        _ip("link", "set", self.link, "up")


@dataclass
class Network:
    """A bridge (the local host's side, :attr:`address`) and the hosts joined to it."""

    bridge: str
    address: str
    hosts: list[Host] = field(default_factory=list)
    _made: list[tuple[str, str]] = field(default_factory=list)


@contextlib.contextmanager
def network(count: int) -> Iterator[Network]:
    """A bridge on this host plus ``count`` namespace hosts; all removed on exit."""
    tag = os.getpid() % 100000
    net = Network(f"sfbr{tag}", _SUBNET.format(tag % 250, 1))
    try:
        _ip("link", "add", net.bridge, "type", "bridge")
        net._made.append(("link", net.bridge))
        _ip("addr", "add", f"{net.address}/24", "dev", net.bridge)
        _ip("link", "set", net.bridge, "up")
        for index in range(count):
            name = f"sfns{tag}-{index}"
            outside, inside = f"sfv{tag}h{index}", f"sfv{tag}n{index}"
            _ip("netns", "add", name)
            net._made.append(("netns", name))
            _ip("link", "add", outside, "type", "veth", "peer", "name", inside)
            net._made.append(("link", outside))
            _ip("link", "set", inside, "netns", name)
            _ip("link", "set", outside, "master", net.bridge)
            _ip("link", "set", outside, "up")
            address = _SUBNET.format(tag % 250, index + 2)
            inner = ["ip", "netns", "exec", name, "ip"]
            subprocess.run([*inner, "addr", "add", f"{address}/24", "dev", inside], check=True)
            subprocess.run([*inner, "link", "set", inside, "up"], check=True)
            subprocess.run([*inner, "link", "set", "lo", "up"], check=True)
            net.hosts.append(Host(name, address, outside))
        yield net
    finally:
        for kind, name in reversed(net._made):
            if kind == "netns":
                _ip("netns", "del", name, check=False)
            else:
                _ip("link", "del", name, check=False)


def leftovers() -> list[str]:
    """Namespaces and links this process made that still exist (should be none)."""
    tag = os.getpid() % 100000
    names = _ip("netns", "list", check=False).stdout.split()
    links = _ip("-o", "link", check=False).stdout
    found = [name for name in names if name.startswith(f"sfns{tag}-")]
    found += [
        word.rstrip(":").split("@")[0]
        for word in links.split()
        if word.startswith((f"sfbr{tag}", f"sfv{tag}"))
    ]
    return found
