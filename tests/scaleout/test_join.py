"""Workers joining a run from other hosts (network namespaces), over CURVE."""

from __future__ import annotations

import json
import logging
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil
import pytest
import zmq

from stageflow import Pipeline
from stageflow.engine import control, wire
from stageflow.engine.join import EXIT_REFUSED
from stageflow.engine.link import EXIT_COORDINATOR_LOST
from stageflow.errors import PipelineError, SecurityError
from stageflow.security import Keys, generate_keys
from tests import netns
from tests.engine.conftest import wait_until
from tests.engine.stages import CountWords, Split
from tests.helpers import REPO, run_stageflow
from tests.scaleout.helpers import TOKEN, Consumer, gated, joined_ready, records, stop_all
from tests.scaleout.stages import Where


def join(
    host: netns.Host, address: str, keys: Path, log: Path, *extra: str
) -> subprocess.Popen[bytes]:
    """`stageflow worker --join` on ``host``, its stderr in ``log``."""
    with log.open("wb") as err:
        return host.python(
            "-m",
            "stageflow",
            "worker",
            "--join",
            address,
            "--keys",
            str(keys),
            *extra,
            cwd=REPO,
            stderr=err,
        )


def test_two_joined_hosts_serve_a_stage_exactly_and_the_link_carries_no_record(
    two_hosts: netns.Network, capture: Path, tmp_path: Path
) -> None:
    """Two hosts serving one stage (the other local) give exact output, both take part, they
    exit 0 at the end, and the captured link never shows a record in plain text."""
    keys = tmp_path / "keys"
    generate_keys(keys)
    pipeline = Pipeline(
        "spread",
        [{"name": "split", "uses": Split}, {"name": "count", "uses": CountWords, "workers": 0}],
    )
    items = records(400)
    run = pipeline.run(
        gated(items, {20: lambda: joined_ready(run, 2)()}),
        listen=f"tcp://{two_hosts.address}:0",
        keys=keys,
        read_ahead=True,
        batch_size=16,
    )
    workers: list[subprocess.Popen[bytes]] = []
    try:
        consumer = Consumer(run)
        address = consumer.address()
        assert address.startswith(f"tcp://{two_hosts.address}:")
        for index, host in enumerate(two_hosts.hosts):
            log = tmp_path / f"worker{index}.log"
            workers.append(join(host, address, keys, log, "--stage", "count"))
        results = consumer.finish(120)
        assert [w.wait(30) for w in workers] == [0, 0]
    finally:
        run.close()
        stop_all(workers)
    assert sorted(int(r.id) for r in results) == list(range(400))
    assert all(r.words == 2 for r in results)
    shares = {name: n for name, n in run.report.per_worker.items() if "@" in name}
    assert len(shares) == 2 and all(shares.values()), shares
    assert sum(shares.values()) == 400
    assert wait_until(lambda: b"CURVE" in capture.read_bytes(), 10), "the capture saw nothing"
    data = capture.read_bytes()
    assert TOKEN.encode() not in data
    assert len(data) > 400 * len(TOKEN), "the capture holds too little to prove anything"


def test_a_worker_with_a_wrong_key_gets_nothing(
    two_hosts: netns.Network, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A host with another key is refused at the handshake (logged once on each side) and
    never joins; a host with the run's key serves the whole stage."""
    keys, stranger = tmp_path / "keys", tmp_path / "stranger"
    generate_keys(keys)
    generate_keys(stranger)
    (stranger / "coordinator.key").write_bytes((keys / "coordinator.key").read_bytes())
    pipeline = Pipeline(
        "guarded",
        [{"name": "split", "uses": Split}, {"name": "count", "uses": CountWords, "workers": 0}],
    )
    run = pipeline.run(records(100), listen=f"tcp://{two_hosts.address}:0", keys=keys)
    good, bad = two_hosts.hosts
    workers: list[subprocess.Popen[bytes]] = []
    try:
        with caplog.at_level(logging.INFO):
            consumer = Consumer(run)
            address = consumer.address()
            workers.append(join(bad, address, stranger, tmp_path / "bad.log"))
            assert workers[0].wait(30) == EXIT_REFUSED
            workers.append(join(good, address, keys, tmp_path / "good.log"))
            results = consumer.finish(120)
            assert workers[1].wait(30) == 0
    finally:
        run.close()
        stop_all(workers)
    assert sorted(int(r.id) for r in results) == list(range(100))
    said = (tmp_path / "bad.log").read_text()
    assert "refused this host's key" in said and "joined" not in said
    refusals = [r.getMessage() for r in caplog.records if "refused a peer" in r.getMessage()]
    assert len(refusals) == 1 and bad.address in refusals[0]
    assert len([name for name in run.report.per_worker if "@" in name]) == 1


def test_a_cut_link_and_a_killed_worker_lose_and_duplicate_nothing(
    two_hosts: netns.Network, tmp_path: Path
) -> None:
    """A host cut off while it holds frames, and a joined worker SIGKILLed while it holds
    frames, are declared lost by heartbeat and forgotten (the cut one exits on its own, having
    lost the coordinator); their frames are redone elsewhere, each record exactly once."""
    keys = tmp_path / "keys"
    generate_keys(keys)
    pipeline = Pipeline(
        "cut",
        [
            {"name": "split", "uses": Split, "workers": 0, "config": {"pause": 0.01}},
            {"name": "count", "uses": CountWords},
        ],
    )
    cut, kept = two_hosts.hosts
    workers: list[subprocess.Popen[bytes]] = []

    def busy_worker(host: int) -> psutil.Process:
        """A worker process of ``workers[host]`` that holds frames and has processed some."""
        children = {p.pid: p for p in psutil.Process(workers[host].pid).children(recursive=True)}
        found: list[int] = []

        def busy() -> bool:
            found[:] = [
                w.pid for w in run.workers() if w.pid in children and w.frames and w.processed
            ]
            return bool(found)

        assert wait_until(busy, 30), "the joined worker never held a frame"
        return children[found[0]]

    def cut_host() -> None:
        busy_worker(0)
        cut.cut()

    def kill_worker() -> None:
        busy_worker(1).kill()

    items = records(300)
    run = pipeline.run(
        gated(items, {20: lambda: joined_ready(run, 3)(), 60: cut_host, 120: kill_worker}),
        listen=f"tcp://{two_hosts.address}:0",
        keys=keys,
        read_ahead=True,
        batch_size=8,
        heartbeat_timeout=2.0,
    )
    try:
        consumer = Consumer(run)
        address = consumer.address()
        workers.append(join(cut, address, keys, tmp_path / "cut.log"))
        workers.append(join(kept, address, keys, tmp_path / "kept.log", "--processes", "2"))
        results = consumer.finish(120)
        assert workers[0].wait(30) == EXIT_COORDINATOR_LOST
        assert workers[1].wait(30) == 128 + signal.SIGKILL  # one of its two was killed
    finally:
        cut.mend()
        run.close()
        stop_all(workers)
    ids = sorted(int(r.id) for r in results)
    assert ids == list(range(300)), "records were lost or duplicated"
    assert run.report.redeliveries > 0


def test_a_stage_with_no_workers_waits_for_one_to_join(
    two_hosts: netns.Network, tmp_path: Path
) -> None:
    """`stageflow run --listen` prints its address, a `workers: 0` stage waits (and says so)
    until a host joins with `stageflow worker --join`, and the output is exact."""
    keys = tmp_path / "keys"
    generate_keys(keys)
    spec = tmp_path / "pipeline.json"
    stages = [
        {"name": "split", "uses": "tests.engine.stages:Split"},
        {"name": "count", "uses": "tests.engine.stages:CountWords", "workers": 0},
    ]
    spec.write_text(json.dumps({"name": "waits", "stages": stages}))
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in records(50)))
    out = tmp_path / "out.jsonl"
    argv = ["run", str(spec), "-i", str(source), "-o", str(out), "--keys", str(keys)]
    argv += ["--listen", f"tcp://{two_hosts.address}:0"]
    coordinator = subprocess.Popen(
        [sys.executable, "-m", "stageflow", *argv], cwd=REPO, stderr=subprocess.PIPE, text=True
    )
    assert coordinator.stderr is not None
    workers: list[subprocess.Popen[bytes]] = []
    try:
        said = [coordinator.stderr.readline() for _ in range(2)]
        assert said[0].startswith(f"stageflow: listening for workers on tcp://{two_hosts.address}:")
        assert "count has no worker yet: waiting for one to join" in said[1], said
        address = said[0].split()[-1]
        workers.append(join(two_hosts.hosts[0], address, keys, tmp_path / "w.log"))
        assert coordinator.wait(60) == 0, coordinator.stderr.read()
        assert workers[0].wait(30) == 0
    finally:
        stop_all([coordinator, *workers])  # type: ignore[list-item]
        coordinator.stderr.close()
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(int(r["id"]) for r in lines) == list(range(50))


def test_listening_beyond_loopback_without_keys_is_refused(tmp_path: Path) -> None:
    """`--listen` on a reachable address without `--keys` exits 2 with one line naming
    `stageflow keygen`, before any output file is made."""
    spec = tmp_path / "pipeline.json"
    spec.write_text(
        json.dumps({"name": "open", "stages": [{"name": "s", "uses": "tests.engine.stages:Split"}]})
    )
    out = tmp_path / "out.jsonl"
    done = run_stageflow("run", str(spec), "-o", str(out), "--listen", "tcp://0.0.0.0:0", cwd=REPO)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "stageflow keygen" in lines[0], done.stderr
    assert not out.exists()


def test_a_worker_of_another_wire_version_is_refused_naming_both(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A join request of another wire version is answered with a refusal naming both
    versions, logged once by the coordinator, and the worker never becomes a member."""
    keys = tmp_path / "keys"
    generate_keys(keys)
    pipeline = Pipeline("versions", [{"name": "split", "uses": Split, "workers": 0}])
    run = pipeline.run(records(1), listen="tcp://127.0.0.1:0", keys=keys)
    worker_keys = Keys.for_worker(keys)
    ctx: zmq.Context[Any] = zmq.Context()
    dealer = ctx.socket(zmq.DEALER)
    dealer.linger = 0
    try:
        with caplog.at_level(logging.ERROR, "stageflow.engine"):
            consumer = Consumer(run)
            worker_keys.connect(dealer)
            dealer.connect(consumer.address())
            request = {
                "host": "elsewhere",
                "pid": 1,
                "wire": wire.VERSION + 1,
                "public": worker_keys.public.decode(),
                "stage": None,
            }
            for _ in range(2):
                dealer.send_multipart([control.JOIN, json.dumps(request).encode()])
                assert dealer.poll(20_000), "no answer to the join request"
                kind, why = dealer.recv_multipart()
                assert kind == control.REFUSED
                assert f"version {wire.VERSION + 1}" in why.decode()
                assert f"version {wire.VERSION};" in why.decode()
            assert not [w for w in run.workers() if "@" in w.name]
            run.stop()
            assert consumer.finish(30) == []
    finally:
        run.close()
        dealer.close()
        ctx.term()
    refusals = [r.getMessage() for r in caplog.records if "refused a worker" in r.getMessage()]
    assert len(refusals) == 1 and "elsewhere" in refusals[0]


def test_a_stage_only_joiners_serve_needs_listen() -> None:
    """`workers: 0` without `listen` is refused at once, naming the option that fixes it."""
    pipeline = Pipeline("alone", [{"name": "split", "uses": Split, "workers": 0}])
    with pytest.raises(PipelineError, match="--listen"):
        pipeline.run(records(1))


def test_a_worker_that_stays_serves_the_next_run_too(tmp_path: Path) -> None:
    """`stageflow worker --stay` outlives the run it served: its process, still running, joins
    the next run on the same address, which it serves exactly, and each run's records were
    processed by a child of that one `stageflow worker`."""
    keys = tmp_path / "keys"
    generate_keys(keys)
    pipeline = Pipeline("again", [{"name": "where", "uses": Where, "workers": 0}])
    address = "tcp://127.0.0.1:0"
    stay: subprocess.Popen[bytes] | None = None
    parents: list[set[int]] = []
    try:
        for turn in range(2):
            run = pipeline.run(records(60), listen=address, keys=keys, start_timeout=30)
            consumer = Consumer(run)
            address = consumer.address()  # the second run listens where the first did
            if stay is None:
                with (tmp_path / "stay.log").open("wb") as err:
                    argv = ["worker", "--join", address, "--keys", str(keys), "--stay"]
                    stay = subprocess.Popen(
                        [sys.executable, "-m", "stageflow", *argv], cwd=REPO, stderr=err
                    )
            results = consumer.finish(60)
            assert sorted(int(r.id) for r in results) == list(range(60)), f"run {turn}"
            parents.append({r.parent for r in results})
            assert stay.poll() is None, "the staying worker exited after a run"
    finally:
        if stay is not None:
            stay.terminate()
            stay.wait(30)
    assert stay is not None
    assert parents == [{stay.pid}, {stay.pid}]


def test_a_host_with_its_own_key_is_shut_out_by_removing_that_key(tmp_path: Path) -> None:
    """`stageflow keygen DIR --worker NAME` makes one host's pair: that host joins with it;
    once its public key leaves the coordinator's folder, the next run refuses that host
    (exit 2) while another host's key still serves the stage."""
    keys = tmp_path / "keys"
    generate_keys(keys)
    for name in ("a", "b"):
        done = run_stageflow("keygen", str(keys), "--worker", name)
        assert done.returncode == 0, done.stderr
    hosts = {}
    for name in ("a", "b"):
        hosts[name] = tmp_path / f"host-{name}"
        hosts[name].mkdir()
        for file in ("coordinator.key", f"worker-{name}.key_secret"):
            shutil.copy2(keys / file, hosts[name] / file)
    pipeline = Pipeline("revoked", [{"name": "where", "uses": Where, "workers": 0}])

    def one_run(*names: str) -> tuple[list[Any], list[int]]:
        """A run that hosts ``names`` try to join: its results and their exit statuses."""
        run = pipeline.run(records(30), listen="tcp://127.0.0.1:0", keys=keys, start_timeout=30)
        consumer = Consumer(run)
        joining = [sys.executable, "-m", "stageflow", "worker", "--join", consumer.address()]
        workers = [
            subprocess.Popen(
                [*joining, "--keys", str(hosts[name])], cwd=REPO, stderr=subprocess.DEVNULL
            )
            for name in names
        ]
        try:
            return consumer.finish(60), [worker.wait(30) for worker in workers]
        finally:
            run.close()
            stop_all(workers)

    results, statuses = one_run("a")
    assert statuses == [0] and sorted(int(r.id) for r in results) == list(range(30))
    (keys / "worker-a.key").unlink()
    results, statuses = one_run("a", "b")
    assert statuses == [EXIT_REFUSED, 0]
    assert sorted(int(r.id) for r in results) == list(range(30))


def test_a_folder_with_two_worker_secrets_is_refused(tmp_path: Path) -> None:
    """A worker folder holding two hosts' secret keys is refused, naming both files."""
    generate_keys(tmp_path, worker="a")
    generate_keys(tmp_path, worker="b")
    with pytest.raises(SecurityError, match=r"worker-a\.key_secret, worker-b\.key_secret"):
        Keys.for_worker(tmp_path)
    with pytest.raises(SecurityError, match="cannot name a worker key"):
        generate_keys(tmp_path, worker="../evil")
