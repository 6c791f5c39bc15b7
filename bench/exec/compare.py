"""Combine the Python and Rust benchmark outputs into one table (used by run.sh)."""
import json
import sys

# metric -> (higher is better?, target description, target check on (python, rust))
TARGETS = {
    "apply_async_get_rtt": (False, "<= 30 us", lambda p, r: r <= 30),
    "map_100k_default_chunksize": (True, ">= 20x Python", lambda p, r: r >= 20 * p),
    "map_20k_chunksize_1": (True, "-", None),
    "payload_16MiB_rtt": (False, "-", None),
    "payload_16MiB_throughput": (True, ">= 2 GB/s", lambda p, r: r >= 2),
}


def load(path):
    out = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line.startswith("{"):
                d = json.loads(line)
                out[d["metric"]] = (d["value"], d["unit"])
    return out


def main():
    py, rs = load(sys.argv[1]), load(sys.argv[2])
    rows = [("metric", "unit", "Python", "Rust", "Rust vs Python", "target", "met")]
    for m, (higher, tdesc, check) in TARGETS.items():
        if m not in py or m not in rs:
            continue
        (p, unit), (r, _) = py[m], rs[m]
        ratio = (r / p) if higher else (p / r)
        met = "-" if check is None else ("yes" if check(p, r) else "NO")
        rows.append((m, unit, f"{p:,.2f}", f"{r:,.2f}", f"{ratio:,.1f}x better" if ratio >= 1 else f"{1/ratio:,.1f}x worse", tdesc, met))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for k, row in enumerate(rows):
        print(" | ".join(c.ljust(w) for c, w in zip(row, widths)))
        if k == 0:
            print("-+-".join("-" * w for w in widths))


if __name__ == "__main__":
    main()
