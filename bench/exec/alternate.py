"""Alternate runs of Python's pool and of two builds of the Rust benchmark.

Usage: python3 bench/exec/alternate.py ROUNDS OLD_BINARY NEW_BINARY [PYTHON_SCRIPT]

Each round runs bench/exec/python_pool.py, then OLD_BINARY, then NEW_BINARY
(both builds of examples/bench_vs_python.rs), each printing one median per
metric over BENCH_REPEATS repeats (default 5), with /proc/loadavg read
before each run. Alternating puts the three under the same load as far as
a shared machine allows. Prints every run, then the median over the rounds
per metric and the ratios to Python.
"""
import json
import os
import statistics
import subprocess
import sys

HIGHER = {
    "apply_async_get_rtt": False,
    "map_100k_default_chunksize": True,
    "map_20k_chunksize_1": True,
    "payload_16MiB_rtt": False,
    "payload_16MiB_throughput": True,
}


def run(cmd):
    load = open("/proc/loadavg").read().split()[0]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=True).stdout
    vals = {}
    for line in out.splitlines():
        if line.startswith("{"):
            d = json.loads(line)
            vals[d["metric"]] = d["value"]
    return float(load), vals


def main():
    rounds, old, new = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    here = os.path.dirname(os.path.abspath(__file__))
    py = sys.argv[4] if len(sys.argv) > 4 else os.path.join(here, "python_pool.py")
    python = os.environ.get("PYTHON", "python3")
    runs = {"python": [], "old": [], "new": []}
    for r in range(rounds):
        for name, cmd in (("python", [python, py]), ("old", [old]), ("new", [new])):
            load, vals = run(cmd)
            runs[name].append((load, vals))
            print(f"round {r + 1} {name:6} load {load:5.2f} " + " ".join(f"{k}={v:,.2f}" for k, v in vals.items()), flush=True)
    print()
    loads = [l for v in runs.values() for l, _ in v]
    print(f"load average (1 min) at the start of the runs: {min(loads):.2f}-{max(loads):.2f}, median {statistics.median(loads):.2f}")
    print("metric | Python | Rust old | Rust new | old vs Python | new vs Python | new vs old")
    for m, higher in HIGHER.items():
        med = {}
        for name in runs:
            xs = [v[m] for _, v in runs[name] if m in v]
            med[name] = statistics.median(xs) if xs else None
        if None in med.values():
            continue

        def ratio(a, b):
            x = a / b if higher else b / a
            return f"{x:.2f}x"

        print(f"{m} | {med['python']:,.2f} | {med['old']:,.2f} | {med['new']:,.2f} | "
              f"{ratio(med['old'], med['python'])} | {ratio(med['new'], med['python'])} | {ratio(med['new'], med['old'])}")


if __name__ == "__main__":
    main()
