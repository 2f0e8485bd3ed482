"""The benchmarks' own arithmetic: the hand-written baselines compute exactly what the seed
plugin computes, and the CPU split reads the right counters."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from stageflow_seed import stages

from benchmarks import seed_math
from benchmarks.cpu_split import cpu_at_exit
from tests.helpers import REPO


def test_benchmark_math_matches_the_seed_plugin() -> None:
    """normalize, mean, variance and trend agree on every bundled sample record."""
    sample = (REPO / "examples" / "seed" / "sample.jsonl").read_text().splitlines()
    for line in sample:
        values = json.loads(line)["raw_values"]
        norm = stages.normalize(values)
        assert seed_math.normalize(values) == norm
        assert seed_math.mean(norm) == stages.mean(norm)
        assert seed_math.variance(norm) == stages.variance(norm)
        assert seed_math.trend(norm) == stages.trend(norm)


def test_cpu_split_reads_a_process_and_the_children_it_waited_for() -> None:
    """benchmarks/cpu_split.py's reading: the parent's own CPU seconds apart from those of
    a child it reaped, both from /proc of the exited, not yet reaped parent."""
    burn = "import time\nend = time.process_time() + {0}\nwhile time.process_time() < end: pass\n"
    parent = (
        "import subprocess, sys\n"
        f"subprocess.run([sys.executable, '-c', {burn.format(0.6)!r}], check=True)\n"
        + burn.format(0.2)
    )
    process = subprocess.Popen([sys.executable, "-c", parent])
    try:
        os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOWAIT)
        own, children = cpu_at_exit(process.pid)
    finally:
        process.wait()
    assert process.returncode == 0
    assert 0.2 <= own < 0.6  # its own burn and start-up, not its child's
    assert children >= 0.6
