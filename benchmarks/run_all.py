"""Run every pipeline benchmark, print the results table and write it to benchmarks/README.md.

    python benchmarks/run_all.py            # full run, ~6-8 minutes
    python benchmarks/run_all.py --quick    # smoke check, ~1-2 minutes (figures are rough)

From the repository root, in the venv with ``pip install -e '.[bench]' -e ./plugins/seed``
(and ``pip install py-spy`` for the profile, Debian's ``valgrind`` for the
instruction counts, section (l)). The results replace the block between the
``bench:results`` markers in benchmarks/README.md; the rest of the file is left alone.
Benchmarks are on-demand tools, not tests: nothing here asserts on timings.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import (
    cpu_split,
    instructions,
    joined,
    journal,
    latency,
    mac,
    memory,
    peers,
    progress_cost,
    startup,
    throughput,
)
from benchmarks.common import have, machine, prepare_environment

HERE = Path(__file__).resolve().parent
README = HERE / "README.md"
START, END = "<!-- bench:results:start -->", "<!-- bench:results:end -->"

FULL = {"records": 200_000, "runs": 5, "watch_runs": 5,
        "latency_s": 10.0, "sizes": [100_000, 1_000_000],
        "startup_runs": 7, "chain": ["--messages", "300000", "--runs", "3"],
        "profile_records": 200_000, "mac_frames": 2000,
        "joined": (20_000, 200, 3)}
QUICK = {"records": 30_000, "runs": 1, "watch_runs": 1,
         "latency_s": 3.0, "sizes": [20_000, 100_000],
         "startup_runs": 3, "chain": ["--messages", "50000", "--runs", "1"],
         "profile_records": 30_000, "mac_frames": 100,
         "joined": (2_000, 50, 1)}
SINK_RATE = 1_500_000.0  # bytes/s read from the memory benchmark's pipe (~8k records/s)


def verdict(ok: bool) -> str:
    return "**met**" if ok else "**not met**"


def fmt(value: float, digits: int = 2) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:,.{digits}f}"


def section_throughput(t: dict[str, dict[str, float]], records: int) -> list[str]:
    sf, pz, tx = t["stageflow"], t["pyzmq"], t["txzmq"]
    out = [f"### (a) Seed pipeline throughput ({records:,} records, median of "
           f"{int(sf['runs'])} interleaved runs)", "",
           "| program | whole run (rec/s) | first→last line (rec/s) | wall (s) | first line (s) "
           "| CPU, all processes (µs/record) |",
           "|---|---:|---:|---:|---:|---:|"]
    rows = (("stageflow run", sf), ("stageflow run --no-fuse", t["stageflow-nofuse"]),
            ("pyzmq + json", pz), ("txZMQ + json", tx))
    for name, row in rows:
        out.append(f"| {name} | {fmt(row['whole_rate'], 0)} | {fmt(row['steady_rate'], 0)} | "
                   f"{fmt(row['wall'])} | {fmt(row['first'])} | {fmt(row['cpu_us'], 1)} |")
    out += ["", "| ratio | whole run | first→last line | target |", "|---|---:|---:|---|"]
    for name, other, target in (("stageflow / pyzmq", pz, 2.0), ("stageflow / txZMQ", tx, 1.5)):
        whole = sf["whole_rate"] / other["whole_rate"]
        steady = sf["steady_rate"] / other["steady_rate"]
        out.append(f"| {name} | {whole:.2f}× | {steady:.2f}× | ≥ {target}× : "
                   f"{verdict(whole >= target and steady >= target)} |")
    return [*out, ""]


def section_latency(lat: dict[str, dict[str, float]]) -> list[str]:
    out = ["### (c) Latency per record, 3 pass-through stages at 1,000 records/s", "",
           "| way in | measured from | records | achieved rate | p50 (ms) | p99 (ms) | max (ms) "
           "| p50 < 1 ms, p99 < 5 ms |", "|---|---|---:|---:|---:|---:|---:|---|"]
    rows = (("embedding API", "stageflow took it", lat["sent"]),
            ("embedding API", "due by the schedule", lat["scheduled"]),
            ("`stageflow run`, paced stdin", "written to stdin", lat["cli"]),
            ("embedding API, unpaced, 1 in flight", "stageflow took it", lat["closed"]))
    for way, since, row in rows:
        ok = row["p50_ms"] < 1.0 and row["p99_ms"] < 5.0
        out.append(f"| {way} | {since} | {int(row['records']):,} | {fmt(row['rate'], 0)}/s | "
                   f"{fmt(row['p50_ms'])} | {fmt(row['p99_ms'])} | {fmt(row['max_ms'])} | "
                   f"{verdict(ok)} |")
    out += ["", "The target applies to the paced rows; the last row (one record at a time, "
            "as fast as it comes back) is the floor under them, not a 1k/s figure.", ""]
    return out


def section_memory(mem: dict[int, dict[str, float]]) -> list[str]:
    small, large = sorted(mem)
    names = [k for k in mem[small] if k != "seconds"]
    out = [f"### (d) Peak RSS per process, slow sink (output pipe read at "
           f"{SINK_RATE / 1e6:.1f} MB/s)", "",
           f"| process | {small:,} records (MiB) | {large:,} records (MiB) | growth |",
           "|---|---:|---:|---:|"]
    worst = 0.0
    for name in names:
        a, b = mem[small].get(name, float("nan")), mem[large].get(name, float("nan"))
        growth = b / a - 1
        worst = max(worst, growth)
        out.append(f"| {name} | {fmt(a, 1)} | {fmt(b, 1)} | {growth:+.1%} |")
    out.append(f"| (run time) | {fmt(mem[small]['seconds'], 1)} s | "
               f"{fmt(mem[large]['seconds'], 1)} s | |")
    out += ["", f"Largest growth {worst:+.1%}; target within 10%: {verdict(worst <= 0.10)}.", ""]
    return out


def section_startup(s: dict[str, float]) -> list[str]:
    return ["### (e) Launch to first result line (`stageflow run`, seed pipeline)", "",
            f"Median {fmt(s['median'], 3)} s over {int(s['runs'])} runs "
            f"(min {fmt(s['min'], 3)} s, max {fmt(s['max'], 3)} s); target < 0.5 s: "
            f"{verdict(s['median'] < 0.5)}. For scale, one interpreter importing what a "
            f"worker imports takes {fmt(s['imports'], 3)} s (median).", "",
            "| launcher | first worker, spawn to done (s) | each next worker (s) |",
            "|---|---:|---:|",
            f"| fork server (default) | {fmt(s['forkserver_first'], 3)} | "
            f"{fmt(s['forkserver_next'], 3)} |",
            f"| subprocess | {fmt(s['subprocess_first'], 3)} | {fmt(s['subprocess_next'], 3)} |",
            "", "Next workers ready in well under 0.2 s after the first: "
            f"{verdict(s['forkserver_next'] < 0.2)}.", ""]


def section_pool(s: dict[str, float]) -> list[str]:
    ratio = s["run_stageflow"] / s["run_pool"]
    return [f"### (f) {int(s['records']):,} seed records, launch to exit, against a "
            "multiprocessing Pool", "",
            "| program | whole run (s) | CPU, all its processes (s) |", "|---|---:|---:|",
            f"| `stageflow run` | {fmt(s['run_stageflow'], 3)} | "
            f"{fmt(s['run_stageflow_cpu'], 2)} |",
            f"| `benchmarks/seed_pool.py` (Pool, same stages and validation) | "
            f"{fmt(s['run_pool'], 3)} | {fmt(s['run_pool_cpu'], 2)} |", "",
            f"stageflow / Pool {ratio:.2f}× (median of the per-run ratios "
            f"{s['run_ratio']:.2f}×); target ≤ 1.5×: {verdict(ratio <= 1.5)}.", ""]


def section_joined(j: dict[str, Any]) -> list[str]:
    out = ["### (k) Workers joined from other hosts (network namespaces, one core each)", ""]
    if "skipped" in j:
        return [*out, f"Skipped: {j['skipped']}.", ""]
    return [*out, f"{j['records']:,} records of {j['rounds']} SHA-256 rounds each through a "
            "`workers: 0` stage served only by joined hosts, each one `stageflow worker "
            f"--join` process under `taskset`; median of {j['runs']} runs.", "",
            "| joined hosts | records/s |", "|---:|---:|",
            f"| 1 | {fmt(j['hosts_1'], 0)} |", f"| 2 | {fmt(j['hosts_2'], 0)} |", "",
            f"Two hosts give {j['hosts_2'] / j['hosts_1']:.2f}× one host.", ""]


def section_journal(j: dict[str, dict[str, float]], records: int) -> list[str]:
    on, off = j["journal"], j["no-journal"]
    out = [f"### (i) Resume journal: seed pipeline into a file ({records:,} records, median of "
           f"{int(on['runs'])} interleaved runs)", "",
           "| variant | whole run (rec/s) | engine time (rec/s) | wall (s) "
           "| CPU, all processes (µs/record) |", "|---|---:|---:|---:|---:|"]
    for name, row in (("journal (default)", on), ("`--no-journal`", off)):
        out.append(f"| {name} | {fmt(row['whole_rate'], 0)} | {fmt(row['engine_rate'], 0)} | "
                   f"{fmt(row['wall'])} | {fmt(row['cpu_us'], 1)} |")
    ratio = on["engine_rate"] / off["engine_rate"]
    out += ["", f"Journal / no journal, engine time: {ratio:.3f}×; target within 5% "
            f"(≥ 0.95×): {verdict(ratio >= 0.95)}.", ""]
    return out


def section_chain(text: str | None) -> list[str]:
    out = ["### (b) Transport: 3-hop forward chain (`benchmarks/transport_chain.py`)", ""]
    if text is None:
        return [*out, "Skipped: benchmarks/transport_chain.py is not on this branch.", ""]
    return [*out, "```", text.strip(), "```", ""]


def run_chain(args: list[str]) -> str | None:
    script = HERE / "transport_chain.py"
    if not script.exists():
        return None
    done = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True,
                          timeout=900)
    return done.stdout if done.returncode == 0 else f"failed: {done.stderr.strip()[-500:]}"


def write_readme(block: str) -> None:
    text = README.read_text() if README.exists() else ""
    if START in text and END in text:
        text = re.sub(re.escape(START) + ".*?" + re.escape(END),
                      lambda _: f"{START}\n{block}\n{END}", text, flags=re.S)
    else:
        text = text.rstrip() + f"\n\n{START}\n{block}\n{END}\n"
    README.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, one run each")
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--no-profile", action="store_true", help="skip the py-spy profile")
    args = parser.parse_args()
    settings = QUICK if args.quick else FULL
    unset = prepare_environment()
    began = time.perf_counter()
    info = machine()
    load_start = tuple(round(x, 1) for x in os.getloadavg())
    with tempfile.TemporaryDirectory(prefix="stageflow-bench-") as tmp:
        directory = Path(tmp)
        print("(a) seed pipeline throughput", flush=True)
        t = throughput.measure(settings["records"], settings["runs"], directory)
        print("(b) transport chain", flush=True)
        chain = run_chain(settings["chain"])
        print("(c) latency", flush=True)
        lat = latency.embedding(1000.0, settings["latency_s"], 500)
        lat["cli"] = latency.cli(1000.0, settings["latency_s"], 500)
        lat["closed"] = latency.closed_loop(int(settings["latency_s"] * 300), 500)
        print("(d) memory", flush=True)
        mem = memory.measure(settings["sizes"], SINK_RATE, 0.1, directory)
        print("(e) startup, (f) against a Pool", flush=True)
        s = startup.measure(settings["startup_runs"])
        print("(g) frame MAC", flush=True)
        macs = mac.measure(settings["mac_frames"])
        print("(h) cost of watching a run", flush=True)
        watch = progress_cost.measure(settings["records"], settings["watch_runs"], directory)
        print("(i) journal", flush=True)
        jour = journal.measure(settings["records"], settings["runs"], directory)
        print("(j) peers", flush=True)
        peer = peers.measure(["text", "numeric"], peers.SIZES["quick" if args.quick else "full"],
                             settings["runs"] if args.quick else 3, directory)
        print("(k) joined hosts", flush=True)
        jo = joined.measure(*settings["joined"])
        print("(m) CPU by process", flush=True)
        split_records = 20_000 if args.quick else 200_000
        split = cpu_split.measure(["text", "numeric"], split_records, 1 if args.quick else 3,
                                  directory)
        instr = None
        if have("valgrind"):
            print("(l) instructions per record", flush=True)
            sizes = (200, 600) if args.quick else (1000, 3000)
            instr = instructions.measure(["text", "numeric"], *sizes)
        prof = None
        if not args.no_profile and have("py-spy"):
            print("profile", flush=True)
            from benchmarks import profile_seed

            prof = profile_seed.profile(settings["profile_records"], 100)
    lines = [
        f"Generated by `python benchmarks/run_all.py{' --quick' if args.quick else ''}` in "
        f"{time.perf_counter() - began:.0f} s"
        + (" (**quick mode: small sizes, single runs; rough figures**)" if args.quick else "")
        + ".", "",
        "Machine: " + "; ".join(f"{k} {v}" for k, v in info.items()), "",
    ]
    lines += section_throughput(t, settings["records"])
    lines += section_chain(chain)
    lines += section_latency(lat)
    lines += section_memory(mem)
    lines += section_startup(s)
    lines += section_pool(s)
    lines += ["### (g) Signing every byte of a frame (`benchmarks/mac.py`)", "", mac.report(macs),
              ""]
    lines += progress_cost.section(watch, settings["records"], settings["watch_runs"])
    lines += section_journal(jour, settings["records"])
    lines += peers.section(peer, 1 if args.quick else 3)
    lines += section_joined(jo)
    if instr is not None:
        lines += ["### (l) Instructions per record, in-process, against the Pool's chain "
                  "(`benchmarks/instructions.py`, callgrind)", "", instructions.table(instr), ""]
    lines += cpu_split.section(split, split_records, 1 if args.quick else 3)
    if prof is not None:
        lines += [f"### Profile tables (py-spy, 100 Hz, {settings['profile_records']:,} records)",
                  "", prof]
    load_end = os.getloadavg()
    lines.insert(4, f"Load average (1, 5, 15 min) at the start {load_start}, at the end "
                 f"{tuple(round(x, 1) for x in load_end)}: with {info['nproc']} CPUs, a load "
                 "above that means other jobs shared the machine during the run, so absolute "
                 "figures are noisy; the interleaved ratios less so.")
    lines.insert(5, "")
    if unset:
        lines.insert(6, f"Unset for the run (they distort it; see benchmarks/common.py): "
                     f"{', '.join(unset)}. Bytecode compiled beforehand, as a wheel install "
                     "has it.")
        lines.insert(7, "")
    block = "\n".join(lines).rstrip() + "\n"
    print(block)
    if not args.no_write:
        write_readme(block)
        print(f"written to {README}")


if __name__ == "__main__":
    main()
