"""Helpers shared by the benchmarks: the machine, input files, processes, statistics."""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SEED_PIPELINE = ROOT / "examples" / "seed" / "pipeline.yaml"
SEED = 20261128
SOURCES = ("sensor-a", "sensor-b", "sensor-c", "manual")


#: Variables that change what is measured: PYTHONUNBUFFERED turns every output line of the
#: programs under test into write syscalls; PYTHONDONTWRITEBYTECODE leaves an editable
#: install without bytecode, so every worker compiles stageflow from source at start.
_DISTORTING = ("PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE")


def _stop(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def prepare_environment() -> list[str]:
    """Unset the distorting variables for this process and its children, and compile the
    repository's bytecode once (as a wheel install would have it); return what was unset.

    A benchmark ended by SIGTERM or SIGHUP then stops as it would on Ctrl-C: each program
    it started runs in its own session, out of reach of the signal, and is reaped, and the
    temporary directories go, instead of both being left behind."""
    import compileall

    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _stop)

    removed = [name for name in _DISTORTING if os.environ.pop(name, None) is not None]
    sys.dont_write_bytecode = False
    for package in ("stageflow", "plugins/seed", "benchmarks"):
        compileall.compile_dir(str(ROOT / package), quiet=1)
    return removed


def stageflow_command(*args: str) -> list[str]:
    """``stageflow ARGS`` through the console script next to this interpreter, if any."""
    script = Path(sys.executable).with_name("stageflow")
    if script.exists():
        return [str(script), *args]
    return [sys.executable, "-m", "stageflow", *args]


def seed_records(count: int, seed: int = SEED) -> Iterator[bytes]:
    """``count`` raw series with examples/seed/make_sample.py's distribution, as JSON lines."""
    rng = random.Random(seed)
    uniform, randint, rand, choice = rng.uniform, rng.randint, rng.random, rng.choice
    for n in range(count):
        length = randint(0, 20)
        kind = rand()
        if kind < 0.05:
            values = [0.0] * length
        elif kind < 0.15:
            values = [round(uniform(-10.0, 0.0), 3) for _ in range(length)]
        else:
            values = [round(uniform(0.0, 100.0), 3) for _ in range(length)]
        record = {"id": f"rec-{n:07d}", "raw_values": values,
                  "metadata": {"source": choice(SOURCES), "batch": n // 100}}
        yield json.dumps(record, sort_keys=True).encode() + b"\n"


def seed_file(directory: Path, count: int) -> Path:
    """Write (once per directory) a deterministic seed input file of ``count`` records."""
    path = directory / f"seed-{count}.jsonl"
    if not path.exists():
        partial = path.with_suffix(".partial")
        with partial.open("wb") as handle:
            buffer: list[bytes] = []
            for line in seed_records(count):
                buffer.append(line)
                if len(buffer) >= 10_000:
                    handle.write(b"".join(buffer))
                    buffer.clear()
            handle.write(b"".join(buffer))
        partial.rename(path)
    return path


def launch(command: Sequence[str], **kwargs: object) -> subprocess.Popen[bytes]:
    """Start ``command`` in its own process group, so :func:`reap` can end all it started."""
    return subprocess.Popen(list(command), start_new_session=True, **kwargs)  # type: ignore[call-overload]


def reap(process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """Wait for ``process``; then end whatever is left in its process group (by its id).

    Called while an exception is on its way out (Ctrl-C, SIGTERM, a failed check), it stops
    the process at once instead of waiting for it to finish: SIGTERM (stageflow then ends
    the records in flight and cleans up), and SIGKILL if that takes more than 3 seconds.
    Its output pipe is closed first, so that it is not left blocked on writing to it."""
    if sys.exc_info()[0] is not None:
        timeout = 0
        if process.stdout is not None:
            process.stdout.close()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.terminate()
        try:
            process.wait(3)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    # The group we created for it: leftovers only, and maybe none.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of already sorted values."""
    if not sorted_values:
        return float("nan")
    rank = max(0, min(len(sorted_values) - 1, round(fraction * len(sorted_values)) - 1))
    return sorted_values[rank]


def versions() -> dict[str, str]:
    import pydantic
    import twisted
    import zmq

    return {
        "python": platform.python_version(),
        "pyzmq": f"{zmq.__version__} (libzmq {zmq.zmq_version()})",
        "twisted": twisted.__version__,
        "pydantic": pydantic.VERSION,
    }


def machine() -> dict[str, str]:
    """nproc, CPU model, memory, library versions and the date, for the results table."""
    model = "unknown CPU"
    memory = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                memory = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break
    except OSError:
        pass
    return {
        "nproc": str(os.cpu_count()),
        "cpu": model,
        "memory": memory,
        **versions(),
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def timed_lines(process: subprocess.Popen[bytes], started: float) -> tuple[int, float, float]:
    """Read ``process``'s stdout to the end: (lines, first line at, last line at), in seconds
    after ``started`` (a ``time.perf_counter()`` value)."""
    assert process.stdout is not None
    fd = process.stdout.fileno()
    lines = 0
    first = last = float("nan")
    while True:
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            break
        now = time.perf_counter() - started
        found = chunk.count(b"\n")
        if found:
            if not lines:
                first = now
            lines += found
            last = now
    return lines, first, last


def have(program: str) -> bool:
    return shutil.which(program) is not None or Path(sys.executable).with_name(program).exists()
