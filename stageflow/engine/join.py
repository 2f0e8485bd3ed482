"""Workers that join a run from another host: ``stageflow worker --join tcp://HOST:PORT``.

:func:`serve` starts ``processes`` worker processes on this host (through the same launcher
as local workers, so none outlives it) and, with ``stay``, starts each again when its run
ends or its coordinator is gone, so the host serves run after run. Each process
(:func:`run_joined`):

1. connects a DEALER, a CURVE client with the host's worker key, to the coordinator's listen
   address and asks to join (:data:`~stageflow.engine.control.JOIN`): its host, pid, wire
   version and public key, and the stage it wants, if any;
2. is welcomed with its settings (stage reference, config, the run's secret, heartbeat
   settings: the stage is imported here by reference, never unpickled from the network) or
   refused with one sentence (another wire version, an unknown stage), which it logs;
3. binds its data PULL on the address this host reaches the coordinator from, a CURVE
   server admitting only the coordinator's key, and runs as any worker does
   (:func:`~stageflow.engine.worker.run_worker`) until the run ends (exit 0) or the
   coordinator falls silent for its heartbeat timeout (exit
   :data:`~stageflow.engine.link.EXIT_COORDINATOR_LOST`).
"""

from __future__ import annotations

import json
import logging
import os
import queue
import socket
import threading
import time
from typing import Any

import zmq
from zmq.utils.monitor import recv_monitor_message

from stageflow.engine import control, shipping, wire
from stageflow.engine.launcher import SubprocessLauncher, WorkerProcess
from stageflow.engine.link import EXIT_COORDINATOR_LOST
from stageflow.security import Keys

__all__ = [
    "EXIT_REFUSED",
    "EXIT_UNREACHED",
    "TARGET",
    "join_settings",
    "own_address",
    "run_joined",
    "serve",
]

log = logging.getLogger("stageflow.worker")

#: Exit status of a worker the coordinator refused (its key, its version, its stage).
EXIT_REFUSED = 2
#: Exit status of a worker that found no coordinator within its wait.
EXIT_UNREACHED = 5
#: What a joined worker process runs (a launcher's target).
TARGET = "stageflow.engine.join:run_joined"


def serve(
    address: str,
    keys_dir: str,
    *,
    stage: str | None = None,
    processes: int = 1,
    stay: bool = False,
    wait: float = 60.0,
    log_level: int = logging.INFO,
) -> int:
    """Run ``processes`` joined workers; the first failing exit status, or 0."""
    Keys.for_worker(keys_dir)  # bad keys: one sentence here, not one per process
    settings = join_settings(
        address, os.path.abspath(keys_dir), stage, None if stay else wait, log_level
    )
    launcher = SubprocessLauncher(TARGET)
    ended: queue.SimpleQueue[tuple[WorkerProcess, int]] = queue.SimpleQueue()

    def start() -> None:
        process = launcher.spawn(settings)
        threading.Thread(target=lambda: ended.put((process, process.wait())), daemon=True).start()

    try:
        for _ in range(processes):
            start()
        running, status = processes, 0
        while running:
            _, code = ended.get()
            running -= 1
            if stay and code in (0, EXIT_COORDINATOR_LOST):
                start()  # this run is over (or its coordinator gone): wait for the next
                running += 1
            elif code and not status:
                status = code if code > 0 else 128 - code  # killed by a signal: as a shell says
        return status
    finally:
        launcher.close()


def join_settings(
    address: str, keys: str | Keys, stage: str | None, wait: float | None, log_level: int
) -> dict[str, Any]:
    """What :func:`run_joined` is started with; ``keys`` a folder on this host, or the keys
    themselves (a Dask task's, made for its run)."""
    return {
        "join": address,
        "keys": keys if isinstance(keys, str) else keys.worker_settings(),
        "stage": stage,
        "wait": wait,
        "log_level": log_level,
    }


def run_joined(settings: dict[str, Any]) -> int:
    """One joined worker process: join the run at ``settings["join"]``, then work."""
    logging.basicConfig(
        level=settings["log_level"], format="stageflow worker: %(message)s", force=True
    )
    given = settings["keys"]
    keys = Keys.for_worker(given) if isinstance(given, str) else Keys.from_settings(given)
    address: str = settings["join"]
    welcome = _join(address, keys, settings["stage"], settings["wait"])
    if isinstance(welcome, int):
        return welcome
    host = address[len("tcp://") :].rsplit(":", 1)[0]
    welcome["control"] = address
    welcome["heartbeat"] = f"tcp://{host}:{welcome['heartbeat'].rsplit(':', 1)[1]}"
    welcome["bind"] = f"tcp://{own_address(address)}:*"
    for stage in welcome["stages"]:
        stage.pop(shipping.PICKLED, None)  # a stage comes by name from the network, never pickled
    from stageflow.engine.worker import run_worker

    return run_worker(welcome, keys)


def _join(address: str, keys: Keys, stage: str | None, wait: float | None) -> dict[str, Any] | int:
    """Ask the coordinator to take this worker: its settings, or the exit status why not."""
    ctx: zmq.Context[Any] = zmq.Context()
    dealer: zmq.Socket[bytes] = ctx.socket(zmq.DEALER)
    keys.connect(dealer)
    monitor = dealer.get_monitor_socket(
        zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_SUCCEEDED
    )
    poller = zmq.Poller()
    poller.register(dealer, zmq.POLLIN)
    poller.register(monitor, zmq.POLLIN)
    try:
        dealer.connect(address)
        request = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "wire": wire.VERSION,
            "public": keys.public.decode(),
            "stage": stage,
        }
        deadline = None if wait is None else time.monotonic() + wait
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            events = dict(poller.poll(None if left is None else int(left * 1000) + 1))
            if monitor in events:
                if recv_monitor_message(monitor)["event"] == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                    # Asked on every new connection: a request sent to a coordinator that
                    # closed before reading it (the run before, with --stay) is lost with it.
                    dealer.send_multipart([control.JOIN, json.dumps(request).encode()])
                    continue
                log.error(
                    "the coordinator at %s refused this host's key; copy the run's "
                    "worker.key_secret and coordinator.key here (made by `stageflow keygen`)",
                    address,
                )
                return EXIT_REFUSED
            if dealer in events:
                kind, body = dealer.recv_multipart()
                if kind == control.WELCOME:
                    settings: dict[str, Any] = json.loads(body)
                    return settings
                log.error("the coordinator at %s refused this worker: %s", address, body.decode())
                return EXIT_REFUSED
            if deadline is not None and time.monotonic() >= deadline:
                log.error(
                    "no coordinator answered at %s within %.0fs; check the address, or "
                    "pass --stay to wait for a run",
                    address,
                    wait,
                )
                return EXIT_UNREACHED
    finally:
        dealer.disable_monitor()
        monitor.close(linger=0)
        dealer.close(linger=0)
        ctx.term()


def own_address(coordinator: str) -> str:
    """This host's address on the route to the coordinator (where it can reach us)."""
    host, port = coordinator[len("tcp://") :].rsplit(":", 1)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        probe.connect((host.strip("[]"), int(port)))  # picks the route; sends nothing
        own: str = probe.getsockname()[0]
    return f"[{own}]" if family == socket.AF_INET6 else own
