"""A stage module that notes which processes its importer has started, each time one imports it.

``stageflow run`` imports it while it reads the pipeline, so the CLI's note says what it
had started by then. The notes go, one JSON line per import, to the file named by
``STAGEFLOW_TEST_NOTES`` (inherited by the fork server and the workers, which note too).
"""

from __future__ import annotations

import json
import os

import psutil
from pydantic import BaseModel

import stageflow
from tests.engine.stages import Line

_NOTES = os.environ.get("STAGEFLOW_TEST_NOTES")
if _NOTES:
    with open(_NOTES, "a", encoding="utf-8") as notes:
        children = [child.pid for child in psutil.Process().children()]
        notes.write(json.dumps({"pid": os.getpid(), "children": children}) + "\n")


class Parent(BaseModel):
    id: str
    ppid: int


class WhoseChild(stageflow.Stage):
    """Line -> Parent: the parent process of the worker that processed each record."""

    name = "test-whose-child"
    Input = Line
    Output = Parent

    def process(self, item: Line) -> Parent:
        return Parent(id=item.id, ppid=os.getppid())
