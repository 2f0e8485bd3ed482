"""CURVE across real network stacks: keys, admission, and no plain text on the link."""

from __future__ import annotations

import logging
import os
import shutil
import stat
import time
from pathlib import Path

import pytest
import zmq

from stageflow.errors import SecurityError
from stageflow.security import Gatekeeper, Keys, generate_keys, require_keys, run_keys
from tests import netns
from tests.helpers import run_stageflow

PEER = str(Path(__file__).with_name("curve_peer.py"))
TOKEN = b"stageflow-secret-record-7f3a"


def wait_for(condition, deadline: float, what: str) -> None:  # type: ignore[no-untyped-def]
    end = time.monotonic() + deadline
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def test_keygen_writes_both_pairs_with_private_secrets(tmp_path: Path) -> None:
    """`stageflow keygen DIR` writes the four files, secrets 0600, and never overwrites."""
    done = run_stageflow("keygen", str(tmp_path / "keys"))
    assert done.returncode == 0, done.stderr
    names = sorted(p.name for p in (tmp_path / "keys").iterdir())
    assert names == ["coordinator.key", "coordinator.key_secret", "worker.key", "worker.key_secret"]
    for name in ("coordinator.key_secret", "worker.key_secret"):
        assert stat.S_IMODE((tmp_path / "keys" / name).stat().st_mode) == 0o600
    again = run_stageflow("keygen", str(tmp_path / "keys"))
    assert again.returncode == 2
    assert again.stderr.count("\n") == 1 and "--force" in again.stderr
    Keys.for_coordinator(tmp_path / "keys")
    Keys.for_worker(tmp_path / "keys")


def test_keys_refused_when_secret_is_readable_by_others(tmp_path: Path) -> None:
    """A secret key other users can read is refused with the chmod that fixes it."""
    generate_keys(tmp_path)
    os.chmod(tmp_path / "worker.key_secret", 0o644)
    with pytest.raises(SecurityError, match="chmod 600"):
        Keys.for_worker(tmp_path)


def test_binding_off_loopback_needs_keys() -> None:
    """Only loopback may be bound without keys, and the refusal names `stageflow keygen`."""
    require_keys("tcp://127.0.0.1:0", None)
    with pytest.raises(SecurityError, match="stageflow keygen"):
        require_keys("tcp://0.0.0.0:0", None)


def test_curve_admits_the_worker_key_refuses_others_and_hides_records(
    two_hosts: netns.Network, capture: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Across namespaces, the admitted worker gets every record, an unknown key gets
    nothing and is logged once, and no record crosses the link in plain text."""
    good = tmp_path / "keys"
    generate_keys(good)
    stranger = tmp_path / "stranger"
    generate_keys(stranger)
    shutil.copy(good / "coordinator.key", stranger / "coordinator.key")  # knows whom to call

    keys = Keys.for_coordinator(good)
    ctx = zmq.Context()
    gate = Gatekeeper(ctx, keys)
    control = ctx.socket(zmq.ROUTER)
    control.linger = 0
    keys.serve(control)
    control.bind(f"tcp://{two_hosts.address}:*")
    address = control.getsockopt_string(zmq.LAST_ENDPOINT)
    feed = ctx.socket(zmq.PUSH)
    feed.linger = 0
    peers = []
    try:
        with caplog.at_level(logging.WARNING, "stageflow.security"):
            host_a, host_b = two_hosts.hosts
            peers.append(host_b.python(PEER, str(stranger), address, host_b.address))
            peers.append(host_a.python(PEER, str(good), address, host_a.address))
            assert control.poll(20_000), "the admitted worker never said hello"
            _identity, kind, inbox, public = control.recv_multipart()
            assert kind == b"hello" and public in keys.admitted
            keys.connect(feed, server_public=public)
            feed.connect(inbox.decode())
            records = [TOKEN + b" %d" % n for n in range(200)]
            for record in records:
                feed.send(record)
            feed.send(b"end")
            assert control.poll(20_000), "the admitted worker never reported"
            _identity, kind, count, size = control.recv_multipart()
            assert (kind, int(count), int(size)) == (b"got", 200, sum(map(len, records)))
            stranger_key = zmq.auth.load_certificate(str(stranger / "worker.key"))[0]
            wait_for(lambda: stranger_key in gate.refused, 20, "the stranger's refusal")
            assert not control.poll(0), "a message arrived from the unknown key"
        refusals = [r for r in caplog.records if "refused a peer" in r.getMessage()]
        assert len(refusals) == 1 and host_b.address in refusals[0].getMessage()
        assert peers[1].wait(20) == 0
    finally:
        for peer in peers:
            if peer.poll() is None:
                peer.kill()
            peer.wait()
        gate.close()
        for sock in (control, feed):
            sock.close(linger=0)
        ctx.term()
    # tcpdump writes each packet as it sees it (-U); the ZMTP greetings name the mechanism
    # in clear, so their presence shows the capture saw the traffic.
    wait_for(lambda: b"CURVE" in capture.read_bytes(), 10, "the capture of the handshakes")
    data = capture.read_bytes()
    assert TOKEN not in data
    assert len(data) > 200 * len(TOKEN), "the capture holds too little to prove anything"


def test_keys_made_for_a_run_are_admitted_besides_the_folders(tmp_path: Path) -> None:
    """run_keys adds a fresh worker pair to the coordinator's admitted keys (keeping the
    folder's), and that worker trusts only the coordinator; without keys, both are made."""
    generate_keys(tmp_path)
    folder = Keys.for_coordinator(tmp_path)
    coordinator, worker = run_keys(folder)
    assert coordinator.public == folder.public
    assert coordinator.admitted == folder.admitted | {worker.public}
    assert worker.server_public == folder.public and worker.admitted == {folder.public}
    assert Keys.from_settings(worker.worker_settings()) == worker
    alone, other = run_keys(None)
    assert alone.admitted == {other.public} and other.server_public == alone.public
