"""Stages the scale-out tests run on joined workers: they say which process served a record."""

from __future__ import annotations

import os
import time

from pydantic import BaseModel, Field

import stageflow
from tests.engine.stages import Line


class Served(BaseModel):
    id: str
    pid: int
    #: The process that started the worker: a Dask worker's, for a task placed on a cluster.
    parent: int


class WhereConfig(BaseModel):
    pause: float = Field(default=0.0, description="seconds to sleep per record, to slow a run")


class Where(stageflow.Stage):
    """Line -> Served: the worker process of each record and that process's parent."""

    name = "test-where"
    Input = Line
    Output = Served
    Config = WhereConfig

    def process(self, item: Line) -> Served:
        if self.config.pause:
            time.sleep(self.config.pause)
        return Served(id=item.id, pid=os.getpid(), parent=os.getppid())
