"""Fixtures for tests that cross hosts: network namespaces, made and removed per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests import netns


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
