"""Where a connection binds or connects: the seed's ZmqEndpointType and ZmqEndpoint."""

from __future__ import annotations

from enum import StrEnum
from typing import NamedTuple


class ZmqEndpointType(StrEnum):
    """Whether a connection listens on an address (bind) or dials it (connect)."""

    bind = "bind"
    connect = "connect"

    def __repr__(self) -> str:
        # txZMQ's members were plain strings, so an endpoint reads back as
        # ZmqEndpoint(type='bind', address=...) in txZMQ's repr and in its users' logs.
        return repr(self.value)


class ZmqEndpoint(NamedTuple):
    """One address a connection binds or connects.

    ``address`` is a ZeroMQ address: ``tcp://127.0.0.1:*`` asks the kernel for a free
    port, ``ipc:///path`` and ``inproc://name`` work as ZeroMQ documents them.
    """

    type: ZmqEndpointType
    address: str
