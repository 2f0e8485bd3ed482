"""Where the CPU goes: the parent process against all the others, stageflow and its peers.

    python benchmarks/cpu_split.py [--records 200000] [--rounds 3] [--pipelines text numeric]

A wall-time ratio says which program is slower, not where. On a machine with fewer cores
than processes, wall time follows the CPU time of all processes together, so this splits
that sum in two for each program of :mod:`benchmarks.peers`:

    parent   the process that was launched, all its threads: stageflow's coordinator, the
             Pool's parent (its feeder and result threads included), the pyzmq ventilator
    others   every process it started, and theirs: the workers (and stageflow's fork server)

Both are exact, not sampled: once the program has exited, and before it is reaped, its
``/proc/PID/stat`` still gives its own CPU seconds and those of the children it waited for
(every program here waits for all its processes). Rounds are interleaved; every output is
checked exactly; the table gives medians.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import ROOT, launch, median, prepare_environment, reap
from benchmarks.peer_work import canonical, expected, input_file
from benchmarks.peers import command, skipped

PROGRAMS = ("stageflow", "pool-validated", "pyzmq")
_TICK = os.sysconf("SC_CLK_TCK")


def cpu_at_exit(pid: int) -> tuple[float, float]:
    """(own, waited-for children's) CPU seconds of ``pid``, an exited process not yet reaped."""
    with open(f"/proc/{pid}/stat", "rb") as handle:
        fields = handle.read().rpartition(b")")[2].split()
    utime, stime, cutime, cstime = (int(field) for field in fields[11:15])
    return (utime + stime) / _TICK, (cutime + cstime) / _TICK


def run_once(program: str, pipeline: str, source: Path, want: list[str],
             out: Path) -> tuple[float, float, float]:
    """One whole run: (wall seconds, parent CPU seconds, other processes' CPU seconds)."""
    out.unlink(missing_ok=True)
    with tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        process = launch(command(program, pipeline, source, out), cwd=ROOT,
                         stdout=subprocess.DEVNULL, stderr=err)
        try:
            # Wait for the exit but leave the process unreaped, so /proc still has its times.
            os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOWAIT)
            wall = time.perf_counter() - started
            own, children = cpu_at_exit(process.pid)
        finally:
            reap(process)
        if process.returncode != 0:
            err.seek(0)
            raise RuntimeError(f"{program} on {pipeline} exited {process.returncode}: "
                               f"{err.read().decode(errors='replace')[-800:]}")
    if canonical(out.read_bytes().splitlines()) != want:
        raise RuntimeError(f"{program} on {pipeline}: wrong output")
    return wall, own, children


def measure(pipelines: list[str], records: int, rounds: int,
            directory: Path) -> dict[str, dict[str, tuple[float, float, float]]]:
    """Medians of (wall, parent CPU, others' CPU), by pipeline and program."""
    programs = [p for p in PROGRAMS if skipped(p) is None]
    found: dict[tuple[str, str], list[tuple[float, float, float]]] = {}
    for pipeline in pipelines:
        source, want = input_file(directory, pipeline, records), expected(pipeline, records)
        for round_ in range(rounds):
            shift = round_ % len(programs)
            for program in programs[shift:] + programs[:shift]:
                result = run_once(program, pipeline, source, want, directory / "out.jsonl")
                found.setdefault((pipeline, program), []).append(result)
                print(f"  cpu split round {round_ + 1}/{rounds} {pipeline:7s} {program:15s} "
                      "wall %.2fs, parent %.2fs, others %.2fs CPU" % result, flush=True)
    table: dict[str, dict[str, tuple[float, float, float]]] = {}
    for (pipeline, program), runs in found.items():
        wall, own, others = (median([run[i] for run in runs]) for i in range(3))
        table.setdefault(pipeline, {})[program] = (wall, own, others)
    return table


def section(table: dict[str, dict[str, tuple[float, float, float]]], records: int,
            rounds: int) -> list[str]:
    """The Markdown table for benchmarks/README.md."""
    title = f"### (m) CPU seconds by process, {records:,} records (median of {rounds} rounds)"
    head = ("| pipeline | program | wall (s) | parent CPU (s) | others' CPU (s) | all CPU (s) "
            "| stageflow's all CPU ÷ this |")
    out = [title, "", head, "|---|---|---:|---:|---:|---:|---:|"]
    for pipeline, programs in table.items():
        ours = sum(programs["stageflow"][1:])
        for program, (wall, own, others) in programs.items():
            out.append(f"| {pipeline} | {program} | {wall:.2f} | {own:.2f} | {others:.2f} | "
                       f"{own + others:.2f} | {ours / (own + others):.2f}× |")
    return [*out, ""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pipelines", nargs="+", default=["text", "numeric"])
    args = parser.parse_args()
    prepare_environment()
    with tempfile.TemporaryDirectory(prefix="stageflow-cpu-") as directory:
        table = measure(args.pipelines, args.records, args.rounds, Path(directory))
    print("\n".join(section(table, args.records, args.rounds)))


if __name__ == "__main__":
    main()
