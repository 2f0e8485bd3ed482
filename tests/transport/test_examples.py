"""The runnable examples in examples/transport/, each run as a real process."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "transport"


def run_example(name: str, *args: str) -> str:
    """Run one example to completion and return its output; fail on a non-zero exit."""
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_distributor_feeds_three_workers_each_item_once() -> None:
    """The distributor's 5 items and 3 health checks are each processed by one worker."""
    out = run_example("work_distributor.py", "--time-scale", "0", "--health-checks", "3")
    sent = re.findall(r"^Sent work item (\S+):", out, re.MULTILINE)
    processed = re.findall(r"^\[workers\] Worker W\d processing (\S+):", out, re.MULTILINE)
    assert len(sent) == 8
    assert sorted(processed) == sorted(sent)


def test_workers_report_per_worker_stats() -> None:
    """The workers print a stats block per worker whose counts add up to the total."""
    out = run_example("work_distributor.py", "--time-scale", "0", "--health-checks", "1")
    block = out[out.rindex("=== Stats ===") :]
    counts = [int(n) for n in re.findall(r"W[123]: (\d+) items processed", block)]
    assert len(counts) == 3
    assert f"Total: {sum(counts)} items" in block and sum(counts) == 6


def test_pipeline_delivers_every_item_through_both_stages() -> None:
    """Every item passes Preprocessor and Analyzer and reaches the collector once."""
    out = run_example("pipeline.py", "--items", "30")
    assert len(re.findall(r"^Preprocessed item ", out, re.MULTILINE)) == 30
    assert len(re.findall(r"^Analyzed item ", out, re.MULTILINE)) == 30
    collected = re.findall(r"^Collected result (item-\d+):", out, re.MULTILINE)
    assert sorted(collected) == sorted(f"item-{n}" for n in range(30))
    assert "All 30 results collected" in out


def test_worker_pool_scales_up_and_down_without_losing_items() -> None:
    """The pool grows from 2 to 5 workers and back, and all items are processed once."""
    out = run_example("worker_pool.py", "--time-scale", "0", "--phases", "2", "5", "2")
    sizes = [int(n) for n in re.findall(r"^Phase \d: pool size (\d+)", out, re.MULTILINE)]
    assert sizes == [2, 5, 2]
    assert out.count("Removed worker") == 3
    assert "Pool finished: 60 items sent, 60 processed exactly once" in out
