"""A run placed on a Dask cluster whose workers are on other hosts (network namespaces)."""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import dask
import pytest
from distributed import Client, LocalCluster

from stageflow import Pipeline
from tests import netns
from tests.engine.conftest import wait_until
from tests.helpers import REPO
from tests.scaleout.helpers import TOKEN, Consumer, gated, joined_ready, records, stop_all
from tests.scaleout.stages import Where


@pytest.fixture
def dask_on_two_hosts(
    two_hosts: netns.Network, tmp_path: Path
) -> Iterator[tuple[Client, list[int]]]:
    """A scheduler on the bridge, one `dask worker` on each namespace host; all stopped after."""
    for name in ("distributed", "tornado"):
        logging.getLogger(name).setLevel(logging.ERROR)
    scratch = str(tmp_path / "dask")  # Dask's scratch folders, not a /tmp folder of its own
    with dask.config.set({"temporary-directory": scratch}):
        cluster = LocalCluster(
            n_workers=0, host=two_hosts.address, scheduler_port=0, dashboard_address=None
        )
        client = Client(cluster, set_as_default=False)
        workers: list[subprocess.Popen[bytes]] = []
        try:
            for host in two_hosts.hosts:
                argv = ["-m", "distributed.cli.dask_worker", cluster.scheduler_address]
                argv += ["--nthreads", "1", "--no-nanny", "--no-dashboard"]
                argv += ["--host", host.address]
                env = {**os.environ, "DASK_TEMPORARY_DIRECTORY": scratch}
                workers.append(host.python(*argv, cwd=REPO, env=env, stderr=subprocess.DEVNULL))
            client.wait_for_workers(2, timeout=60)
            yield client, [w.pid for w in workers]
        finally:
            for worker in workers:
                worker.terminate()
            stop_all(workers)
            client.close()
            cluster.close()


def test_a_cluster_on_other_hosts_joins_over_curve_with_keys_made_for_the_run(
    dask_on_two_hosts: tuple[Client, list[int]], two_hosts: netns.Network, capture: Path
) -> None:
    """With the Dask workers on two other hosts and no keys given, the run listens on this
    host's address towards the scheduler, its tasks join with a key pair made for it, both
    hosts process records, the output is exact, and the link never shows a record in clear."""
    client, dask_pids = dask_on_two_hosts
    pipeline = Pipeline("far", [{"name": "where", "uses": Where, "workers": 0}])
    run = pipeline.run(
        gated(records(300), {10: lambda: joined_ready(run, 2)()}),
        cluster=client,
        read_ahead=True,
        batch_size=8,
    )
    results = Consumer(run).finish(90)
    assert sorted(int(r.id) for r in results) == list(range(300))
    assert {r.parent for r in results} == set(dask_pids)
    assert run.listening is not None and run.listening.startswith(f"tcp://{two_hosts.address}:")
    assert wait_until(lambda: b"CURVE" in capture.read_bytes(), 10), "the capture saw nothing"
    assert TOKEN.encode() not in capture.read_bytes()
