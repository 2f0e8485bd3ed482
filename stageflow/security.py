"""CURVE keys for sockets that leave the host: made once, loaded once, passed down.

``stageflow keygen DIR`` writes two key pairs in pyzmq's certificate format
(:func:`zmq.auth.create_certificates`)::

    DIR/coordinator.key          public   copy to every worker host
    DIR/coordinator.key_secret   secret   stays on the coordinator's host (mode 0600)
    DIR/worker.key               public   stays with the coordinator: the workers it admits
    DIR/worker.key_secret        secret   copy to every worker host (mode 0600)

``stageflow keygen DIR --worker NAME`` adds a pair for one host, ``worker-NAME.key`` and
``worker-NAME.key_secret``, so that host can be shut out alone: remove its public file from
the coordinator's folder and the next run refuses it.

A coordinator loads :meth:`Keys.for_coordinator` (its own pair plus the worker public keys
it admits); a joining worker loads :meth:`Keys.for_worker` (its own pair plus the
coordinator's public key). The same :class:`Keys` object then configures every socket of
that process, server side (:meth:`Keys.serve`) or client side (:meth:`Keys.connect`), so the
policy lives in one place and no socket is configured by hand.

The coordinator's ZAP handler (:class:`Gatekeeper`) admits only the public keys found in its
``worker*.key`` files; any other client is refused by ZeroMQ before a byte of data reaches
stageflow, and each refused key is logged once.

A run placed on a Dask cluster makes a worker pair of its own instead (:func:`run_keys`), in
memory: it admits that run's tasks only and is gone with the run.
"""

from __future__ import annotations

import logging
import os
import re
import stat
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import zmq
import zmq.auth
from zmq.utils import z85

from stageflow.errors import SecurityError

__all__ = ["Gatekeeper", "Keys", "generate_keys", "is_loopback", "require_keys", "run_keys"]

log = logging.getLogger("stageflow.security")

COORDINATOR = "coordinator"
WORKER = "worker"
_ZAP_ENDPOINT = "inproc://zeromq.zap.01"
_ZAP_DOMAIN = "stageflow"
_HOST_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def generate_keys(
    directory: str | os.PathLike[str], *, force: bool = False, worker: str | None = None
) -> list[Path]:
    """Write a coordinator and a worker key pair into ``directory``; return the paths.

    With ``worker``, write only a worker pair of that host's own, ``worker-NAME.key`` and
    ``worker-NAME.key_secret``. Refuses to overwrite existing keys unless ``force`` is set:
    replacing a key pair silently would lock out every worker host that holds the old one.
    """
    folder = Path(directory)
    if worker is not None and not _HOST_NAME.fullmatch(worker):
        raise SecurityError(
            f"{worker!r} cannot name a worker key; use letters, digits, '.', '_' and '-'"
        )
    whos = (COORDINATOR, WORKER) if worker is None else (f"{WORKER}-{worker}",)
    names = [f"{who}.{kind}" for who in whos for kind in ("key", "key_secret")]
    existing = [name for name in names if (folder / name).exists()]
    if existing and not force:
        raise SecurityError(
            f"{folder} already holds {', '.join(existing)}; remove them or pass --force to "
            "replace them (hosts holding the old keys will then be refused)"
        )
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for who in whos:
            public, secret = zmq.auth.create_certificates(str(folder), who)
            os.chmod(secret, stat.S_IRUSR | stat.S_IWUSR)
            os.chmod(public, 0o644)
    except OSError as exc:
        raise SecurityError(f"cannot write keys into {folder}: {exc.strerror}") from exc
    return [folder / name for name in names]


def _load_pair(folder: Path, who: str) -> tuple[bytes, bytes]:
    path = folder / f"{who}.key_secret"
    try:
        public, secret = zmq.auth.load_certificate(str(path))
    except (OSError, ValueError) as exc:
        raise SecurityError(
            f"cannot read the {who} secret key {path}: {exc}; make one with "
            f"`stageflow keygen {folder}`"
        ) from exc
    if secret is None:
        raise SecurityError(f"{path} holds no secret key; make one with `stageflow keygen`")
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SecurityError(
            f"{path} is readable by other users (mode {stat.S_IMODE(mode):o}); "
            f"run `chmod 600 {path}`"
        )
    return public, secret


def _worker_name(folder: Path) -> str:
    """Which worker pair of ``folder`` this host uses: the shared one, or its own."""
    if (folder / f"{WORKER}.key_secret").exists():
        return WORKER
    own = sorted(path.name for path in folder.glob(f"{WORKER}-*.key_secret"))
    if len(own) > 1:
        raise SecurityError(
            f"{folder} holds several worker secret keys ({', '.join(own)}); keep only this "
            "host's own"
        )
    return own[0].removesuffix(".key_secret") if own else WORKER


def _load_public(path: Path) -> bytes:
    try:
        public, _ = zmq.auth.load_certificate(str(path))
    except (OSError, ValueError) as exc:
        raise SecurityError(f"cannot read the public key {path}: {exc}") from exc
    return public


@dataclass(frozen=True)
class Keys:
    """One process's CURVE identity and the peers it trusts."""

    public: bytes
    secret: bytes
    #: The coordinator's public key (what a worker connects to).
    server_public: bytes
    #: Public keys of the peers this process admits to the sockets it serves: the worker
    #: keys on a coordinator, the coordinator's key on a worker.
    admitted: frozenset[bytes] = field(default_factory=frozenset)

    @classmethod
    def for_coordinator(cls, directory: str | os.PathLike[str]) -> Keys:
        """The coordinator's pair, and every ``worker*.key`` in ``directory`` as admitted."""
        folder = Path(directory)
        public, secret = _load_pair(folder, COORDINATOR)
        admitted = frozenset(_load_public(path) for path in sorted(folder.glob(f"{WORKER}*.key")))
        if not admitted:
            raise SecurityError(
                f"{folder} holds no worker public key (worker.key); make the keys with "
                f"`stageflow keygen {folder}`"
            )
        return cls(public, secret, public, admitted)

    @classmethod
    def for_worker(cls, directory: str | os.PathLike[str]) -> Keys:
        """The worker's pair (``worker.key_secret``, else the one ``worker-NAME.key_secret``);
        the coordinator's public key, the only peer it admits."""
        folder = Path(directory)
        public, secret = _load_pair(folder, _worker_name(folder))
        server = _load_public(folder / f"{COORDINATOR}.key")
        return cls(public, secret, server, frozenset({server}))

    @classmethod
    def from_settings(cls, settings: dict[str, str]) -> Keys:
        """A worker's keys from :meth:`worker_settings` (they travel to a Dask task)."""
        server = settings["server_public"].encode()
        return cls(
            settings["public"].encode(), settings["secret"].encode(), server, frozenset({server})
        )

    def worker_settings(self) -> dict[str, str]:
        """This worker's pair and the coordinator's public key, as JSON-able text."""
        return {
            "public": self.public.decode(),
            "secret": self.secret.decode(),
            "server_public": self.server_public.decode(),
        }

    def serve(self, sock: zmq.Socket[Any]) -> None:
        """Make ``sock`` (about to bind) a CURVE server checked by the ZAP handler."""
        sock.curve_secretkey = self.secret
        sock.curve_publickey = self.public
        sock.zap_domain = _ZAP_DOMAIN.encode()
        sock.curve_server = True

    def connect(self, sock: zmq.Socket[Any], server_public: bytes | None = None) -> None:
        """Make ``sock`` (about to connect) a CURVE client of the coordinator, or of the
        peer whose public key is ``server_public`` (a worker's data socket)."""
        sock.curve_secretkey = self.secret
        sock.curve_publickey = self.public
        sock.curve_serverkey = server_public or self.server_public


class Gatekeeper:
    """A ZAP handler: admits CURVE clients whose public key is in ``keys.admitted``.

    It answers ZeroMQ's authentication requests on a thread of its own, for every socket of
    its context that :meth:`Keys.serve` configured. A refused key is logged once, with the
    peer's address, and counted in :attr:`refused`.
    """

    def __init__(self, context: zmq.Context[Any], keys: Keys) -> None:
        self._admitted = keys.admitted
        self._handler: zmq.Socket[bytes] = context.socket(zmq.REP)
        self._handler.linger = 0
        self._handler.bind(_ZAP_ENDPOINT)
        self._wake: zmq.Socket[bytes] = context.socket(zmq.PAIR)
        self._wake_address = f"inproc://stageflow-zap-stop-{id(self)}"
        self._wake.bind(self._wake_address)
        self._context = context
        self.refused: dict[bytes, int] = {}
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._serve, name="stageflow-zap", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        stop: zmq.Socket[bytes] = self._context.socket(zmq.PAIR)
        stop.linger = 0
        stop.connect(self._wake_address)
        poller = zmq.Poller()
        poller.register(self._handler, zmq.POLLIN)
        poller.register(stop, zmq.POLLIN)
        try:
            while True:
                events = dict(poller.poll())
                if stop in events:
                    return
                if self._handler in events:
                    self._answer(self._handler.recv_multipart())
        finally:
            stop.close(linger=0)
            self._handler.close(linger=0)

    def _answer(self, request: list[bytes]) -> None:
        # ZAP 1.0 (RFC 27): version, request id, domain, address, identity, mechanism, creds.
        if len(request) < 6:
            return
        version, request_id, _domain, address, _identity, mechanism = request[:6]
        credentials = request[6:]
        # CURVE credentials are the client's 32-byte public key; key files hold Z85 text.
        key = z85.encode(credentials[0]) if mechanism == b"CURVE" and credentials else mechanism
        allowed = key in self._admitted
        if not allowed:
            with self._lock:
                seen = self.refused.get(key, 0)
                self.refused[key] = seen + 1
            if not seen:
                log.warning(
                    "refused a peer from %s: its key %s is not among the admitted keys; give "
                    "a worker host the run's worker.key_secret and coordinator.key",
                    address.decode(errors="replace") or "an unknown address",
                    key.decode(errors="replace"),
                )
        status, text = (b"200", b"OK") if allowed else (b"400", b"unknown key")
        self._handler.send_multipart([version, request_id, status, text, b"", b""])

    def close(self) -> None:
        """Stop answering; sockets still bound with CURVE refuse everyone afterwards."""
        if self._thread.is_alive():
            self._wake.send(b"stop")
            self._thread.join(5)
        self._wake.close(linger=0)


def run_keys(coordinator: Keys | None) -> tuple[Keys, Keys]:
    """A worker key pair made for one run, and ``coordinator`` (made too if None) admitting it.

    A coordinator's own pair is kept, so the hosts that hold `stageflow keygen`'s keys still
    join; nothing is written to disk.
    """
    if coordinator is None:
        public, secret = zmq.curve_keypair()
        coordinator = Keys(public, secret, public)
    public, secret = zmq.curve_keypair()
    worker = Keys(public, secret, coordinator.public, frozenset({coordinator.public}))
    return replace(coordinator, admitted=coordinator.admitted | {public}), worker


def is_loopback(address: str) -> bool:
    """Whether a ``tcp://HOST:PORT`` (or ipc/inproc) address stays on this host."""
    if not address.startswith("tcp://"):
        return True
    host = address[len("tcp://") :].rsplit(":", 1)[0].strip("[]")
    return host in ("localhost", "::1") or host.startswith("127.")


def require_keys(address: str, keys: Keys | None) -> None:
    """Refuse to bind anything but loopback without CURVE keys."""
    if keys is None and not is_loopback(address):
        raise SecurityError(
            f"{address} is reachable from other hosts, so it needs CURVE keys: make them with "
            "`stageflow keygen DIR` and pass --keys DIR"
        )
