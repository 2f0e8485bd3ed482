"""The engine: worker processes fed over PUSH/PULL, and the coordinator that runs them.

Modules, by job:

- :mod:`~stageflow.engine.wire`: the frame format records travel in.
- :mod:`~stageflow.engine.runner`: one stage's per-batch work (validate, process, serialise),
  free of I/O.
- :mod:`~stageflow.engine.strict`: JSON values that would change on the way (NaN literals in,
  nan floats out), caught cheaply.
- :mod:`~stageflow.engine.shipping`: how a worker gets its stage class, by name or by value.
- :mod:`~stageflow.engine.worker`: the worker process: a runner on its own reactor, its
  inbox a :mod:`stageflow.transport` PULL; :mod:`~stageflow.engine.link` its control thread.
- :mod:`~stageflow.engine.control`: the control plane's protocol and heartbeat constants.
- :mod:`~stageflow.engine.tracker`: follows every input record, and all it fans out into,
  until its last output is written.
- :mod:`~stageflow.engine.launcher`: starts worker processes, forked from a preloaded server
  (:mod:`~stageflow.engine.bootstrap` is what runs in the processes it starts) or fresh.
- :mod:`~stageflow.engine.coordinator`: the loop: feeds input, routes what workers say,
  hands out results. Its parts: :mod:`~stageflow.engine.pool` (how many workers, started
  through the launcher), :mod:`~stageflow.engine.membership` (registration, liveness),
  :mod:`~stageflow.engine.dispatch` (frames against credit, who holds what),
  :mod:`~stageflow.engine.feeding` (input into frames), :mod:`~stageflow.engine.finishing`
  (the end of stream), :mod:`~stageflow.engine.supervisor` (lost, stuck, retiring and
  stopping workers), :mod:`~stageflow.engine.scaling` (requests from any thread, and the
  decisions of :mod:`~stageflow.engine.autoscale` for stages with ``workers: {min, max}``),
  :mod:`~stageflow.engine.status` (snapshots for other threads),
  :mod:`~stageflow.engine.options` and :mod:`~stageflow.engine.rundir`.
- :mod:`~stageflow.engine.run`: the iterator :meth:`stageflow.Pipeline.run` returns.
- :mod:`~stageflow.engine.report`: what a run reports when it ends.
"""
