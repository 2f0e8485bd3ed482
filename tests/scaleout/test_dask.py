"""Runs placed on a Dask cluster (a LocalCluster of separate processes): cluster=, --cluster."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from multiprocessing import resource_tracker
from pathlib import Path

import dask
import psutil
import pytest
from distributed import Client, LocalCluster

from stageflow import Pipeline
from stageflow.engine import cluster
from stageflow.errors import ClusterError
from tests.engine.conftest import live_children, wait_until
from tests.engine.stages import FanOut, Split
from tests.helpers import REPO, run_stageflow
from tests.scaleout.helpers import Consumer, gated, joined_ready, records
from tests.scaleout.stages import Where


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    """A LocalCluster of two worker processes, one thread each, shut down after the module."""
    for name in ("distributed", "tornado"):  # its chatter on worker restarts is not ours
        logging.getLogger(name).setLevel(logging.ERROR)
    # Dask's scratch folders under pytest's temporary folder, not one of its own in /tmp.
    with dask.config.set({"temporary-directory": str(tmp_path_factory.mktemp("dask"))}):
        cluster = LocalCluster(
            n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None
        )
        client = Client(cluster, set_as_default=False)
        try:
            yield client
        finally:
            client.close()
            cluster.close()
    # multiprocessing started its resource tracker for the nannies; it would otherwise live
    # as long as this interpreter, and later tests count our child processes.
    resource_tracker._resource_tracker._stop()
    assert wait_until(lambda: not live_children(), 20), [p.cmdline() for p in live_children()]


def dask_pids(client: Client) -> set[int]:
    return set(client.run(os.getpid).values())


def _stageflow_children() -> list[str]:
    """Run on a Dask worker: the command lines of its live child processes."""
    lines = []
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):  # gone, or a zombie its task reaps
            lines.append(" ".join(child.cmdline()))
    return lines


def tasks_gone(client: Client) -> bool:
    """No task left on the scheduler and no process left under any Dask worker."""
    tasks = client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks))
    children = client.run(_stageflow_children)
    return tasks == 0 and not any(children.values())


@pytest.fixture(autouse=True)
def nothing_left_on_the_cluster(client: Client) -> Iterator[None]:
    """Every test leaves the cluster as it found it: two workers, no task, no process."""
    yield
    client.wait_for_workers(2, timeout=30)
    assert wait_until(lambda: tasks_gone(client), 15), client.run(_stageflow_children)


def where(pause: float = 0.0) -> Pipeline:
    return Pipeline(
        "placed", [{"name": "where", "uses": Where, "workers": 0, "config": {"pause": pause}}]
    )


def test_a_local_cluster_runs_a_pipeline_exactly_in_its_worker_processes(client: Client) -> None:
    """cluster=client puts one worker on each Dask worker thread: every record is processed
    exactly once, in children of the Dask worker processes, both take part, and once the run
    is over the cluster holds neither a task nor a process of it."""
    run = where().run(
        gated(records(300), {10: lambda: joined_ready(run, 2)()}),
        cluster=client,
        read_ahead=True,
        batch_size=8,
    )
    results = Consumer(run).finish(60)
    assert sorted(int(r.id) for r in results) == list(range(300))
    parents = {r.parent for r in results}
    assert parents == dask_pids(client), "records were not processed under both Dask workers"
    assert run.listening is not None and run.listening.startswith("tcp://127.0.0.1:")
    assert run.options.keys is not None, "the run's door had no CURVE keys"
    assert wait_until(lambda: tasks_gone(client), 10), "the run's tasks outlived it"


def test_a_dask_worker_killed_mid_run_loses_and_duplicates_nothing(client: Client) -> None:
    """SIGKILL of a Dask worker process whose stageflow worker holds frames: that worker dies
    with it, is declared lost by heartbeat, its frames are redone, and the output is exact."""
    killed: list[int] = []

    def kill_a_busy_dask_worker() -> None:
        pids = dask_pids(client)

        def busy() -> bool:
            for worker in run.workers():
                if worker.frames and worker.processed and psutil.pid_exists(worker.pid or 0):
                    parent = psutil.Process(worker.pid).ppid()
                    if parent in pids:
                        killed.append(parent)
                        return True
            return False

        assert wait_until(busy, 20), "no Dask-placed worker held frames"
        os.kill(killed[0], signal.SIGKILL)

    run = where(pause=0.002).run(
        gated(records(400), {10: lambda: joined_ready(run, 2)(), 100: kill_a_busy_dask_worker}),
        cluster=client,
        read_ahead=True,
        batch_size=8,
        heartbeat_timeout=2.0,
    )
    results = Consumer(run).finish(60)
    assert killed
    assert sorted(int(r.id) for r in results) == list(range(400)), "lost or duplicated"
    assert run.report.redeliveries > 0


def test_an_aborted_run_ends_its_dask_tasks_at_once(client: Client) -> None:
    """A run abandoned mid-way (close()) ends its tasks well before any heartbeat timeout:
    the run's stop event kills the joined processes and nothing stays on the cluster."""
    run = where(pause=0.01).run(
        gated(records(10_000), {10: lambda: joined_ready(run, 2)()}),
        cluster=client,
        read_ahead=True,
        batch_size=8,
        heartbeat_timeout=60.0,
    )
    iterator = iter(run)
    next(iterator)
    run.abort()
    began = time.monotonic()
    run.close()
    assert wait_until(lambda: tasks_gone(client), 15)
    assert time.monotonic() - began < 20, "the tasks waited for the heartbeat timeout"


def test_cluster_workers_places_that_many_tasks_on_the_named_stages(client: Client) -> None:
    """cluster_workers=N places N tasks on the `workers: 0` stages (the third of 3 on 2 threads
    waits for a thread and never joins), and the other stages keep their local workers."""
    pipeline = Pipeline(
        "mixed",
        [
            {"name": "split", "uses": Split},
            {"name": "fan", "uses": FanOut},
            {"name": "where", "uses": Where, "workers": 0},
        ],
    )
    run = pipeline.run(
        gated(records(200), {10: lambda: joined_ready(run, 2)()}),
        cluster=client,
        cluster_workers=3,
        read_ahead=True,
        batch_size=8,
    )
    results = Consumer(run).finish(60)
    assert sorted(r.id for r in results) == sorted(f"{n}.{i}" for n in range(200) for i in (0, 1))
    assert {r.parent for r in results} <= dask_pids(client)
    joined = {name for name in run.report.per_worker if "@" in name}
    assert len(joined) == 2 and all(name.startswith("where@") for name in joined), joined


def test_a_cluster_that_is_no_client_nor_address_is_refused() -> None:
    """cluster= of another type is refused at once, in one sentence naming what it takes."""
    with pytest.raises(ClusterError, match="Client or a scheduler address"):
        where().run(records(1), cluster=42)


def _spec(tmp_path: Path) -> tuple[Path, Path]:
    spec = tmp_path / "pipeline.json"
    stage = {"name": "where", "uses": "tests.scaleout.stages:Where", "workers": 0}
    spec.write_text(json.dumps({"name": "cli", "stages": [stage]}))
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in records(120)))
    return spec, source


def test_the_cli_runs_on_a_cluster_given_by_its_dask_address(
    client: Client, tmp_path: Path
) -> None:
    """`stageflow run --cluster dask://HOST:PORT --cluster-workers 1` places one worker on
    that cluster and exits 0 with every record written once, processed under one Dask worker."""
    spec, source = _spec(tmp_path)
    out = tmp_path / "out.jsonl"
    address = "dask://" + client.scheduler.address.removeprefix("tcp://")
    argv = ["run", str(spec), "-i", str(source), "-o", str(out), "--cluster", address]
    done = run_stageflow(*argv, "--cluster-workers", "1", timeout=90)
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(int(r["id"]) for r in lines) == list(range(120))
    parents = {r["parent"] for r in lines}
    assert len(parents) == 1 and parents <= dask_pids(client)
    assert "placed 1 worker on the Dask cluster" in done.stderr


def test_the_cli_without_dask_names_the_extra(tmp_path: Path) -> None:
    """Where dask.distributed cannot be imported, `--cluster` exits 2 with one line naming
    the `stageflow[dask]` extra, before any output file is made."""
    spec, source = _spec(tmp_path)
    shadow = tmp_path / "shadow" / "distributed"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('not installed here')\n")
    out = tmp_path / "out.jsonl"
    done = run_stageflow(
        "run",
        str(spec),
        "-i",
        str(source),
        "-o",
        str(out),
        "--cluster",
        "tcp://127.0.0.1:1",
        pythonpath=[shadow.parent, REPO],
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "stageflow[dask]" in lines[0], done.stderr
    assert not out.exists()


def test_an_unreachable_scheduler_is_one_sentence(monkeypatch: pytest.MonkeyPatch) -> None:
    """cluster= naming an address where no scheduler answers raises one ClusterError
    naming the address, and leaves no process behind."""
    monkeypatch.setattr(cluster, "_CONNECT_TIMEOUT", 1.0)  # refused at once: no need for 10 s
    before = {p.pid for p in live_children()}  # the cluster's own
    with socket.socket() as unheard:
        unheard.bind(("127.0.0.1", 0))  # bound and never listening: connections are refused
        address = f"tcp://127.0.0.1:{unheard.getsockname()[1]}"
        with pytest.raises(ClusterError, match=f"cannot reach the Dask scheduler at {address}"):
            list(where().run(records(1), cluster=address))
    assert wait_until(lambda: not {p.pid for p in live_children()} - before, 10)


def test_importing_stageflow_imports_no_dask() -> None:
    """The package, its engine and its CLI load without importing dask or distributed."""
    code = (
        "import sys, stageflow, stageflow.engine.run, stageflow.cli, stageflow.engine.cluster\n"
        "from stageflow import Pipeline\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed')))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("given", "address", "listen"),
    [
        ("dask://127.0.0.1:8786", "tcp://127.0.0.1:8786", "tcp://127.0.0.1:0"),
        ("tcp://localhost:8786", "tcp://localhost:8786", "tcp://127.0.0.1:0"),
        ("tls://127.0.0.2:8786", "tls://127.0.0.2:8786", "tcp://127.0.0.1:0"),
    ],
)
def test_scheduler_addresses_and_where_the_run_listens(
    given: str, address: str, listen: str
) -> None:
    """dask:// means tcp://; a scheduler on this host means the run listens on loopback."""
    assert cluster.scheduler_address(given) == address
    assert cluster.listen_address(address) == listen


@pytest.mark.parametrize("given", ["foo://x:1", "tcp://127.0.0.1", "scheduler:8786"])
def test_what_is_no_scheduler_address_is_refused(given: str) -> None:
    """An address without a Dask scheme or a port is refused in one sentence."""
    with pytest.raises(ClusterError, match="is not a Dask scheduler address"):
        cluster.scheduler_address(given)


def test_a_caller_killed_mid_run_leaves_nothing_on_the_cluster(
    client: Client, tmp_path: Path
) -> None:
    """`stageflow run --cluster` killed by SIGKILL mid-run: its Dask-placed workers hear no
    heartbeat, exit within the timeout, and their tasks end; nothing of it stays."""
    spec = tmp_path / "pipeline.json"
    stage = {"name": "where", "uses": "tests.scaleout.stages:Where", "workers": 0}
    stage["config"] = {"pause": 0.05}
    spec.write_text(json.dumps({"name": "orphaned", "stages": [stage]}))
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in records(2000)))
    argv = ["run", str(spec), "-i", str(source), "-o", str(tmp_path / "out.jsonl")]
    argv += ["--cluster", client.scheduler.address, "--heartbeat-timeout", "2"]
    caller = subprocess.Popen(
        [sys.executable, "-m", "stageflow", *argv], cwd=REPO, stderr=subprocess.DEVNULL
    )
    try:
        out = tmp_path / "out.jsonl"

        def working() -> bool:
            """Both tasks have a process, and records are being written: a worker joined."""
            started = sum(bool(c) for c in client.run(_stageflow_children).values()) == 2
            return started and out.exists() and out.stat().st_size > 0

        assert wait_until(working, 30), "the run's workers never started on the cluster"
        caller.kill()
        caller.wait(10)
        assert wait_until(lambda: tasks_gone(client), 15), client.run(_stageflow_children)
    finally:
        if caller.poll() is None:
            caller.kill()
        caller.wait(10)
