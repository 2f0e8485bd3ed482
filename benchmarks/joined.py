"""(f) Throughput with workers joined from other hosts: 1 and 2 network namespaces.

The coordinator runs here and listens on a bridge; each namespace host runs
``stageflow worker --join`` with one process pinned to one core (``taskset``), serving a
CPU-bound stage (``benchmarks.stages:Burn``, ``workers: 0``). Records per second are timed
from the moment every joined worker is ready to the last result, median of ``--runs``, so
the figure shows what adding a host adds. Needs root (``ip netns``); skipped otherwise.

    python benchmarks/joined.py [--records 20000] [--rounds 200] [--runs 3]
    python benchmarks/joined.py --quick    # a smoke check: 2000 records, 50 rounds, one run
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import median
from benchmarks.stages import Burn
from stageflow import Pipeline
from stageflow.security import generate_keys
from tests import netns

REPO = Path(__file__).resolve().parent.parent


def one_run(hosts: list[netns.Host], bridge: str, keys: Path, records: int, rounds: int) -> float:
    """Records per second of one run served by one pinned worker per host."""
    pipeline = Pipeline("joined", [{"name": "burn", "uses": Burn, "workers": 0}])
    began: list[float] = []

    def items() -> Iterator[dict[str, int]]:
        deadline = time.monotonic() + 60
        while sum(w.state == "ready" for w in run.workers()) < len(hosts):
            if time.monotonic() > deadline:
                raise RuntimeError("the joined workers never became ready")
            time.sleep(0.01)  # a benchmark's own wait, not a test's synchronisation
        began.append(time.perf_counter())
        for seq in range(records):
            yield {"seq": seq, "rounds": rounds}

    run = pipeline.run(
        items(), listen=f"tcp://{bridge}:0", keys=keys, read_ahead=True, batch_size=64
    )
    results: list[Any] = []
    consumer = threading.Thread(target=lambda: results.extend(run), daemon=True)
    consumer.start()
    workers: list[subprocess.Popen[bytes]] = []
    try:
        while run.listening is None and consumer.is_alive():
            time.sleep(0.01)
        cores = os.cpu_count() or 1
        for index, host in enumerate(hosts):
            argv = ["taskset", "-c", str(index % cores), sys.executable, "-m", "stageflow", "-q"]
            argv += ["worker", "--join", str(run.listening), "--keys", str(keys)]
            workers.append(host.popen(argv, cwd=REPO))
        consumer.join()
        ended = time.perf_counter()
    finally:
        run.close()
        for worker in workers:
            worker.wait(30)
    if len(results) != records or not began:
        raise RuntimeError(f"the run returned {len(results)} of {records} records")
    return records / (ended - began[0])


def measure(records: int, rounds: int, runs: int) -> dict[str, Any]:
    """Median records per second with 1 and 2 joined hosts, or why it was skipped."""
    reason = netns.unavailable() or (None if shutil.which("taskset") else "no taskset")
    if reason is not None:
        return {"skipped": reason}
    rates: dict[str, Any] = {"records": records, "rounds": rounds, "runs": runs}
    with tempfile.TemporaryDirectory(prefix="stageflow-joined-") as tmp, netns.network(2) as net:
        keys = Path(tmp) / "keys"
        generate_keys(keys)
        for count in (1, 2):
            hosts = net.hosts[:count]
            figures = [one_run(hosts, net.address, keys, records, rounds) for _ in range(runs)]
            rates[f"hosts_{count}"] = median(figures)
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="small sizes, one run")
    args = parser.parse_args()
    if args.quick:
        args.records, args.rounds, args.runs = 2_000, 50, 1
    print(measure(args.records, args.rounds, args.runs))


if __name__ == "__main__":
    main()
