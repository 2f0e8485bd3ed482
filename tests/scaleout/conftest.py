"""Fixtures for tests that cross hosts: network namespaces, made and removed per test."""

from __future__ import annotations

import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import netns
from tests.engine.conftest import live_children, wait_until


@pytest.fixture
def two_hosts() -> Iterator[netns.Network]:
    """A bridge on this host and two namespace hosts; nothing of them survives the test."""
    reason = netns.unavailable()
    if reason is not None:
        pytest.skip(f"cannot make network namespaces: {reason}")
    try:
        with netns.network(2) as net:
            yield net
    finally:
        assert netns.leftovers() == [], "a namespace or link outlived its test"


@pytest.fixture
def capture(two_hosts: netns.Network, tmp_path: Path) -> Iterator[Path]:
    """Everything crossing the bridge, in a pcap file, while the test runs."""
    if shutil.which("tcpdump") is None:
        pytest.skip("tcpdump is not installed (.ci/run installs it)")
    path = tmp_path / "link.pcap"
    dump = subprocess.Popen(
        ["tcpdump", "-i", two_hosts.bridge, "-U", "-s", "0", "-w", str(path)],
        stderr=subprocess.PIPE,
    )
    assert dump.stderr is not None
    line = dump.stderr.readline()  # "listening on ...": the capture is armed
    assert b"listening" in line, line
    try:
        yield path
    finally:
        dump.send_signal(signal.SIGINT)
        dump.wait(10)
        dump.stderr.close()


@pytest.fixture(autouse=True)
def no_process_left_behind(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail the test if any child process outlives it (the Dask tests check their cluster)."""
    yield
    if "client" in request.fixturenames:  # a cluster kept for its module: its own check
        return
    assert wait_until(lambda: not live_children(), timeout=10), (
        f"processes left behind: {[p.cmdline() for p in live_children()]}"
    )
