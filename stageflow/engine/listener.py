"""The coordinator's door for workers on other hosts: its CURVE sockets and who may join.

With ``listen`` set, the coordinator binds, besides its loopback sockets, a control ROUTER
and a heartbeat PUB on the listen address, both CURVE servers checked by a
:class:`~stageflow.security.Gatekeeper` (an unknown key never gets past ZeroMQ's handshake).
A worker there asks to join (:data:`~stageflow.engine.control.JOIN`); :meth:`Listener.admit`
answers with its settings, or refuses it with one sentence (another wire version, an unknown
stage). Records never travel on this door unencrypted: data frames go to the joined worker's
own CURVE-served PULL, and its outputs come back on the control ROUTER.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import zmq

from stageflow.engine import control, wire
from stageflow.security import Gatekeeper, Keys, require_keys

__all__ = ["Listener", "Request"]

log = logging.getLogger("stageflow.engine")

Request = dict[str, Any]


class Listener:
    """The control ROUTER and heartbeat PUB that joining workers connect to."""

    def __init__(
        self,
        ctx: zmq.Context[Any],
        address: str,
        keys: Keys | None,
        secret: bytes,
        interval: float,
        max_message_size: int,
    ) -> None:
        require_keys(address, keys)
        self.keys = keys
        self._gate = Gatekeeper(ctx, keys) if keys is not None else None
        self.router: zmq.Socket[bytes] = ctx.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.MAXMSGSIZE, max_message_size * 2)
        self.router.setsockopt(zmq.RCVHWM, 0)
        if keys is not None:
            keys.serve(self.router)
        self.router.bind(address)
        self.address: str = self.router.getsockopt_string(zmq.LAST_ENDPOINT)
        host = self.address.rsplit(":", 1)[0]
        self.pulse = control.Pulse(ctx, f"{host}:*", secret, interval, keys)
        self._versions_refused: set[object] = set()

    def request(self, body: list[bytes]) -> Request | None:
        """The join request in ``body``, or None (logged) when it is not one."""
        try:
            info = json.loads(body[1]) if len(body) == 2 else None
        except ValueError:
            info = None
        if not isinstance(info, dict):
            log.warning("ignored a malformed join request")
            return None
        return info

    def refusal(self, info: Request, stages: list[str]) -> str | None:
        """Why the worker asking to join may not, or None when it may."""
        version = info.get("wire")
        if version != wire.VERSION:
            why = (
                f"it speaks wire format version {version} and this coordinator version "
                f"{wire.VERSION}; install the same stageflow version on both hosts"
            )
            if version not in self._versions_refused:  # a host of N processes: one line
                self._versions_refused.add(version)
                log.error("refused a worker from host %s: %s", info.get("host"), why)
            return why
        stage = info.get("stage")
        if stage is not None and stage not in stages:
            return f"this run has no stage named {stage!r}; its stages are {', '.join(stages)}"
        if self.keys is not None and str(info.get("public", "")).encode() not in self.keys.admitted:
            return "its public key is not among the run's worker keys"
        return None

    def answer(self, identity: bytes, kind: bytes, body: dict[str, Any] | str) -> None:
        text = body if isinstance(body, str) else json.dumps(body)
        self.router.send_multipart([identity, kind, text.encode()], zmq.NOBLOCK)

    def close(self) -> None:
        self.pulse.close()
        self.router.close(linger=0)
        if self._gate is not None:
            self._gate.close()
