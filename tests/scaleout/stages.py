"""Stages the scale-out tests run on joined workers: they say which process served a record."""

from __future__ import annotations

import os

from tests.engine.stages import Line, Pid, WhoAmI


class Served(Pid):
    #: The process that started the worker: a Dask worker's, for a task placed on a cluster.
    parent: int


class Where(WhoAmI):
    """Line -> Served: the worker process of each record and that process's parent."""

    name = "test-where"
    Output = Served

    def process(self, item: Line) -> Served:
        return Served(**super().process(item).model_dump(), parent=os.getppid())
