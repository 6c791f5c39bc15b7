"""Python half of the spindle-exec benchmark (run by run.sh).

Prints one JSON object per line: {"metric", "value", "unit"} (medians over repeats),
with the same workloads and definitions as crates/spindle-exec/examples/bench_vs_python.rs.
"""
import json
import os
import statistics
import sys
import time
from multiprocessing import Pool


def noop(x):
    return x


def sqr(x):
    return x * x


def echo(b):
    return b


def emit(metric, value, unit):
    print(json.dumps({"metric": metric, "value": value, "unit": unit}), flush=True)


def main():
    repeats = int(os.environ.get("BENCH_REPEATS", "5"))
    procs = os.cpu_count() or 1
    with Pool(processes=procs) as pool:
        for _ in range(200):
            pool.apply_async(noop, (1,)).get(timeout=120)
        per = []
        for _ in range(repeats):
            n = 2000
            t0 = time.perf_counter()
            for i in range(n):
                pool.apply_async(noop, (i,)).get(timeout=120)
            per.append((time.perf_counter() - t0) / n * 1e6)
        emit("apply_async_get_rtt", statistics.median(per), "us")

        per = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            r = pool.map(sqr, range(100_000))
            per.append(100_000 / (time.perf_counter() - t0))
            assert len(r) == 100_000
        emit("map_100k_default_chunksize", statistics.median(per), "tasks/s")

        per = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            r = pool.map(sqr, range(20_000), chunksize=1)
            per.append(20_000 / (time.perf_counter() - t0))
            assert len(r) == 20_000
        emit("map_20k_chunksize_1", statistics.median(per), "tasks/s")

        payload = b"\xab" * (16 << 20)
        for _ in range(3):
            pool.apply_async(echo, (payload,)).get(timeout=120)
        per = []
        for _ in range(max(repeats, 5)):
            t0 = time.perf_counter()
            r = pool.apply_async(echo, (payload,)).get(timeout=120)
            per.append(time.perf_counter() - t0)
            assert len(r) == 16 << 20
        dt = statistics.median(per)
        emit("payload_16MiB_rtt", dt * 1e3, "ms")
        emit("payload_16MiB_throughput", 2 * (16 << 20) / dt / 1e9, "GB/s")


if __name__ == "__main__":
    sys.exit(main())
