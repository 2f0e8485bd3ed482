"""A run's joined workers placed on a Dask cluster: ``pipeline.run(items, cluster=client)``.

The coordinator stays in the caller and listens as with ``listen=``; :class:`Placement`
submits long-running tasks to the cluster, each of which starts one joined worker process
(:mod:`stageflow.engine.join`, the same path as ``stageflow worker --join``) on its Dask
worker's host and waits for it. So any Dask deployment (a LocalCluster, dask-kubernetes,
dask-jobqueue, a cloud's) places stageflow workers, and the coordinator neither knows nor
cares that Dask started them.

- **Where the run listens**: on loopback when the scheduler is on this host (a LocalCluster),
  else on this host's address on the route to the scheduler (the Dask workers reach the
  scheduler, so they reach that address too; ``listen=`` says otherwise), on a free port.
- **Keys**: a CURVE worker pair made for the run (:func:`~stageflow.security.run_keys`),
  admitted besides the keys of ``keys=``. The tasks carry it in their arguments, so it
  crosses Dask's own comms, which are encrypted only when the cluster uses TLS
  (``distributed.Security``); the pair opens this run only and dies with it.
- **How many**: ``count`` tasks (``cluster_workers=``), by default one per Dask worker thread
  when the run starts. They are spread in turn over the stages with ``workers: 0``; when
  there are none, each serves the stage the run needs most.
- **Lifetimes**: a task holds one thread of its Dask worker while its process runs (the
  process does CPU work, so the thread is the honest account of it, and it does not
  ``secede``). The process is the Dask worker's child and dies with it. The run's end tells its
  joined workers to stop; :meth:`Placement.close` then sets the run's *over* Dask
  :class:`~distributed.Event` (a task that starts now, having waited for a thread, returns at
  once), waits for the tasks, sets its *stop* event, on which each task still running kills
  its process (an aborted run, a task that never got to join), and cancels what is left.
  A task whose caller died (no close, no event) ends too: its process exits after
  ``heartbeat_timeout`` without a heartbeat, or without an answer to its join request. A Dask
  worker that dies is a lost worker to the coordinator (heartbeat): its frames go to the
  others, and Dask may run its task again elsewhere, which joins as a new worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import threading
import time
from typing import TYPE_CHECKING, Any

from stageflow.engine import join
from stageflow.engine.launcher import SubprocessLauncher, WorkerProcess
from stageflow.errors import ClusterError
from stageflow.security import Keys, is_loopback, run_keys

if TYPE_CHECKING:
    from distributed import Client

    from stageflow.engine.options import EngineOptions
    from stageflow.plan import FusionPlan

__all__ = ["Placement", "listen_address", "scheduler_address"]

log = logging.getLogger("stageflow.engine")

#: Seconds a task's watcher waits on the run's stop event per call (a long poll on the
#: scheduler; the event wakes it at once).
_STOP_POLL = 5.0
#: Seconds :meth:`Placement.close` waits for tasks told to stop (their processes killed).
_END_TIMEOUT = 10.0
#: Seconds to wait for a scheduler given by address to answer.
_CONNECT_TIMEOUT = 10.0


def _distributed() -> Any:
    try:
        import distributed
    except ImportError as exc:
        raise ClusterError(
            "placing a run on a Dask cluster needs dask.distributed; install it with "
            "`pip install 'stageflow[dask]'`"
        ) from exc
    return distributed


def scheduler_address(text: str) -> str:
    """The Dask address of ``dask://HOST:PORT``, ``tcp://HOST:PORT`` or ``tls://HOST:PORT``."""
    scheme, _, rest = text.partition("://")
    _, _, port = rest.rpartition(":")
    if scheme not in ("dask", "tcp", "tls") or not port.isdigit():
        raise ClusterError(
            f"{text!r} is not a Dask scheduler address; give one like tcp://HOST:8786"
        )
    return f"{'tcp' if scheme == 'dask' else scheme}://{rest}"


def listen_address(scheduler: str) -> str:
    """Where a run placed on the cluster of ``scheduler`` (a Dask address) listens."""
    scheme, _, rest = scheduler.partition("://")
    if scheme == "inproc" or is_loopback(f"tcp://{rest}"):
        return "tcp://127.0.0.1:0"
    try:
        return f"tcp://{join.own_address(f'tcp://{rest}')}:0"
    except OSError as exc:
        raise ClusterError(
            f"cannot find this host's address towards the Dask scheduler at {scheduler} "
            f"({exc}); check the address, or give listen= (--listen ADDRESS)"
        ) from exc


class Placement:
    """The tasks that carry one run's joined workers on a Dask cluster (see the module).

    ``cluster`` is a :class:`distributed.Client`, or a scheduler address (``tcp://HOST:PORT``
    or ``dask://HOST:PORT``) for which the run connects a client of its own and closes it.
    """

    def __init__(
        self,
        cluster: Client | str,
        plan: FusionPlan,
        *,
        count: int | None,
        listen: str | None,
        keys: Keys | None,
    ) -> None:
        distributed = _distributed()
        if isinstance(cluster, str):
            self._address = scheduler_address(cluster)
            # Any: much of distributed's API is untyped (Client.close, Future.done, Event.set).
            self._client: Any = None
        elif isinstance(cluster, distributed.Client):
            self._address = cluster.scheduler.address
            self._client = cluster
        else:
            raise ClusterError(
                "cluster= takes a dask.distributed Client or a scheduler address like "
                f"tcp://HOST:8786, not {type(cluster).__name__}"
            )
        if count is not None and count < 1:
            raise ClusterError(f"cluster_workers is {count}; give 1 or more (or leave it out)")
        self._owned = self._client is None
        self._count = count
        # The units only joined workers serve (``workers: 0``) are the ones meant for the cluster.
        self._stages = [unit.name for unit in plan.units if unit.workers == 0]
        self.listen = listen or listen_address(self._address)
        self.keys, self._worker_keys = run_keys(keys)
        self._futures: list[Any] = []
        self._over: Any = None
        self._stop: Any = None
        self._ending = False

    def start(self, address: str, options: EngineOptions) -> None:
        """Submit the tasks whose workers join the run listening at ``address``."""
        distributed = _distributed()
        if self._client is None:
            try:
                self._client = distributed.Client(
                    self._address, timeout=_CONNECT_TIMEOUT, set_as_default=False
                )
            except (OSError, ValueError) as exc:
                raise ClusterError(
                    f"cannot reach the Dask scheduler at {self._address} ({exc}); check the "
                    "address and that the scheduler is running"
                ) from exc
        client = self._client
        count = self._count or sum(client.nthreads().values())
        if not count:
            raise ClusterError(
                f"the Dask cluster at {self._address} has no workers yet; start some, or give "
                "cluster_workers= (--cluster-workers N) and the tasks wait for them"
            )
        token = secrets.token_hex(4)
        self._over = distributed.Event(f"stageflow-over-{token}", client=client)
        self._stop = distributed.Event(f"stageflow-stop-{token}", client=client)
        for number in range(count):
            stage = self._stages[number % len(self._stages)] if self._stages else None
            # The run listens already, so a live coordinator answers at once: waiting as long
            # as for a heartbeat ends the process of a task whose caller died before it joined.
            settings = join.join_settings(
                address, self._worker_keys, stage, options.heartbeat_timeout, options.log_level
            )
            future = client.submit(
                _serve_one,
                settings,
                self._over,
                self._stop,
                key=f"stageflow-{token}-{number}",
                pure=False,
            )
            future.add_done_callback(self._ended)
            self._futures.append(future)
        log.info(
            "placed %d worker%s on the Dask cluster at %s",
            count,
            "" if count == 1 else "s",
            self._address,
        )

    def _ended(self, future: Any) -> None:
        """Say why a task ended early (runs on a thread of Dask's client)."""
        if self._ending or future.status == "cancelled":
            return
        with contextlib.suppress(Exception):  # the client is closing: nothing to say
            if future.status == "error":
                log.warning("a Dask task of this run failed: %s", future.exception())
            elif future.result():
                log.warning(
                    "a Dask task of this run ended with status %s (its worker's log says why)",
                    future.result(),
                )

    def close(self, grace: float) -> None:
        """End every task: ``grace`` seconds to stop on their own, then at once."""
        self._ending = True
        try:
            if self._futures:
                self._end_tasks(grace)
        except OSError as exc:  # the scheduler's comms (CommClosedError, timeouts)
            log.warning(
                "could not tell the Dask scheduler at %s that the run ended (%s); its workers "
                "exit by themselves within heartbeat_timeout",
                self._address,
                exc,
            )
        finally:
            self._futures.clear()
            if self._owned and self._client is not None:
                self._client.close()
                self._client = None


    def _end_tasks(self, grace: float) -> None:
        self._over.set()
        _wait(self._futures, grace)
        self._stop.set()
        _wait(self._futures, _END_TIMEOUT)
        left = [str(f.key) for f in self._futures if not f.done()]
        if left:
            log.warning("Dask tasks %s did not end; cancelling them", ", ".join(left))
        self._client.cancel(self._futures, force=True)
        for event in (self._over, self._stop):
            event.clear()  # nobody waits on it now: the scheduler forgets it


def _wait(futures: list[Any], timeout: float) -> None:
    """Wait up to ``timeout`` seconds for ``futures`` to be done, however they end."""
    deadline = time.monotonic() + timeout
    for future in futures:
        # A task's failure was logged when it ended; a timeout leaves it for the caller.
        with contextlib.suppress(Exception):
            future.result(timeout=max(0.0, deadline - time.monotonic()))


def _serve_one(settings: dict[str, Any], over: Any, stop: Any) -> int:
    """A Dask task: one joined worker process on this Dask worker, until the run ends."""
    if over.is_set():  # started after the run ended (it waited for a free thread)
        return 0
    launcher = SubprocessLauncher(join.TARGET)
    try:
        process = launcher.spawn(settings)
        watcher = threading.Thread(target=_kill_on, args=(stop, process), daemon=True)
        watcher.start()
        return process.wait()
    finally:
        launcher.close()


def _kill_on(stop: Any, process: WorkerProcess) -> None:
    """Kill ``process`` once ``stop`` is set; return once it has ended anyway."""
    while process.poll() is None:
        try:
            told = stop.wait(_STOP_POLL)
        # The scheduler or this Dask worker is going away (a closed comm, a cancelled call);
        # the process ends anyway, with its run or when it hears no heartbeat.
        except (Exception, asyncio.CancelledError):  # noqa: BLE001
            return
        if told:
            process.kill()
            return
