"""The run's folder (the workers' current-record files), and those runs left behind.

Each folder is named after its coordinator's pid, ``stageflow-PID-*`` in the temporary
directory, so a coordinator killed with ``kill -9``, which cannot remove its own, has its
folder removed by the next run on the machine.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile

__all__ = ["make", "remove_orphans"]

_PREFIX = "stageflow-"


def make() -> str:
    """A fresh folder for this process's run; the folders of dead coordinators go first."""
    remove_orphans()
    return tempfile.mkdtemp(prefix=f"{_PREFIX}{os.getpid()}-")


def remove_orphans() -> None:
    """Remove the run folders whose coordinator process is gone."""
    base = tempfile.gettempdir()
    with contextlib.suppress(OSError):
        for name in os.listdir(base):
            owner = name[len(_PREFIX) :].split("-")[0] if name.startswith(_PREFIX) else ""
            if owner.isdigit() and not _alive(int(owner)):
                shutil.rmtree(os.path.join(base, name), ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: not ours to judge
    return True
