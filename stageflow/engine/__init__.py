"""The engine: worker processes wired with PUSH/PULL, and the coordinator that runs them.

Modules, by job:

- :mod:`~stageflow.engine.wire`: the frame format records travel in.
- :mod:`~stageflow.engine.runner`: one stage's per-batch work (validate, process, serialise),
  free of I/O.
- :mod:`~stageflow.engine.strict`: JSON values that would change on the way (NaN literals in,
  nan floats out), caught cheaply.
- :mod:`~stageflow.engine.shipping`: how a worker gets its stage class, by name or by value.
- :mod:`~stageflow.engine.worker`: the worker process: a runner on its own reactor, with
  :mod:`stageflow.transport` connections.
- :mod:`~stageflow.engine.tracker`: follows every input record, and all it fans out into,
  until its last output is written.
- :mod:`~stageflow.engine.launcher`: starts worker processes, forked from a preloaded server
  (:mod:`~stageflow.engine.bootstrap` is what runs in the processes it starts) or fresh.
- :mod:`~stageflow.engine.coordinator`: starts, wires, feeds and supervises the workers.
- :mod:`~stageflow.engine.run`: the iterator :meth:`stageflow.Pipeline.run` returns.
- :mod:`~stageflow.engine.report`: what a run reports when it ends.
"""
