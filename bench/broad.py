#!/usr/bin/env python3
"""Broad-crawl benchmark: many hosts behind a wildcard DNS on loopback.

Serves `spindle_testsite::broad` (the `broad_site` example: a wildcard DNS
server on 127.0.0.153, every `hN.broad.test` on 127.0.0.61 with long
keep-alive, hanging hosts on 127.0.0.62) and crawls it from `h0` with the
release `spindle` binary, pointed at that DNS with DNS_NAMESERVERS.

While it crawls, it samples the crawler's RSS and open descriptors every
0.5 s. It records when the server has answered every good page (and every
robots.txt): hosts/s and pages/s are measured to that moment. With --tail
(default) the crawl also waits on `tail.broad.test/`, which answers only
when told: after the good hosts are done the benchmark waits --after
seconds (slot GC and idle connections run meanwhile), samples RSS and
descriptors "after", then releases the tail so the crawl ends.

    cargo build --release -p spindle-cli -p spindle-testsite --examples
    bench/broad.py --hosts 20000 --hanging 40 --concurrency 64 --timeout 10
    bench/broad.py --hosts 100000

Prints one JSON object with the figures.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def fds(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--hosts", type=int, default=20000)
    ap.add_argument("--pages", type=int, default=3)
    ap.add_argument("--links", type=int, default=4)
    ap.add_argument("--hanging", type=int, default=0)
    ap.add_argument("--hang-every", type=int, default=0,
                    help="one good host in this many links to a hanging host (default: spread over all; 1: all linked from the first hosts)")
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--latency-ms", type=int, default=0, help="how long each good page takes")
    ap.add_argument("--timeout", type=float, default=10)
    ap.add_argument("--robots", default="true")
    ap.add_argument("--after", type=float, default=20, help="seconds to wait before the 'after' sample")
    ap.add_argument("--gc", type=float, default=5, help="SLOT_GC_INTERVAL")
    ap.add_argument("--no-tail", action="store_true")
    ap.add_argument("--nofile", type=int, default=0, help="ulimit -n for the crawler (0: as is)")
    ap.add_argument("--limit", type=float, default=1800, help="give up after this many seconds")
    ap.add_argument("-s", action="append", default=[], help="extra settings NAME=VALUE")
    a = ap.parse_args()

    site_bin = os.path.join(ROOT, "target/release/examples/broad_site")
    spindle = os.path.join(ROOT, "target/release/spindle")
    hang_every = a.hang_every or (max(1, a.hosts // a.hanging) if a.hanging else 1)
    site = subprocess.Popen(
        [site_bin, str(a.hosts), str(a.pages), str(a.links), str(a.hanging), str(hang_every), str(a.latency_ms)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
    info = {}
    for _ in range(3):
        k, v = site.stdout.readline().split()
        info[k] = v

    def served():
        site.stdin.write("served\n")
        site.stdin.flush()
        return int(site.stdout.readline().split()[1])

    robots = a.robots.lower() in ("1", "true")
    expected = a.hosts * (a.pages + (1 if robots else 0))
    out = tempfile.mkdtemp(prefix="spindle-broad-")
    settings = [
        f"DNS_NAMESERVERS={info['dns']}",
        f"CONCURRENT_REQUESTS={a.concurrency}",
        f"DOWNLOAD_TIMEOUT={a.timeout}",
        f"ROBOTSTXT_OBEY={a.robots}",
        f"SLOT_GC_INTERVAL={a.gc}",
        "LOGSTATS_INTERVAL=0",
    ] + a.s
    cmd = [spindle, "crawl", info["start"]]
    if not a.no_tail:
        # The tail answers when released, so its request must outlast the wait.
        cmd.append(info["tail"])
        if a.hanging:
            sys.exit("--hanging needs --no-tail: the tail needs a long DOWNLOAD_TIMEOUT")
        settings[2] = "DOWNLOAD_TIMEOUT=3600"
    cmd += ["--allow-domain", "broad.test", "-o", os.path.join(out, "items.jsonl"),
            "--stats", os.path.join(out, "stats.json")]
    for s in settings:
        cmd += ["-s", s]
    if a.nofile:
        cmd = ["sh", "-c", f'ulimit -n {a.nofile} && exec "$0" "$@"'] + cmd
    t0 = time.monotonic()
    crawler = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(os.path.join(out, "stderr"), "w"),
                               env={**os.environ, "RUST_LOG": "warn"})
    pid = crawler.pid
    samples = []
    start_rss = None
    done_at = None
    after = None
    load0 = os.getloadavg()
    while crawler.poll() is None:
        time.sleep(0.5)
        now = time.monotonic() - t0
        r, f = rss_kib(pid), fds(pid)
        n = served()
        if r is None:
            continue
        if start_rss is None:
            start_rss = r
        samples.append((now, r, f, n))
        if done_at is None and n >= expected:
            done_at = now
        if done_at is not None and not a.no_tail and after is None and now >= done_at + a.after:
            after = {"t": now, "rss_kib": r, "fds": f}
            site.stdin.write("release\n")
            site.stdin.flush()
            site.stdout.readline()
        if now > a.limit:
            crawler.kill()
            break
    crawler.wait()
    elapsed = time.monotonic() - t0
    site.stdin.close()
    site.wait()
    stats = json.load(open(os.path.join(out, "stats.json")))
    during = [s for s in samples if done_at is None or s[0] <= done_at]
    peak = max(s[1] for s in during)
    good_time = done_at if done_at is not None else elapsed
    result = {
        "hosts": a.hosts, "pages_per_host": a.pages, "hanging": a.hanging, "hang_every": hang_every, "latency_ms": a.latency_ms,
        "concurrency": a.concurrency, "timeout": a.timeout, "robots": robots,
        "good_done_s": round(good_time, 2) if done_at is not None else None,
        "served": samples[-1][3] if samples else 0, "expected": expected,
        "hosts_per_s": round(a.hosts / good_time, 1),
        "pages_per_s": round(a.hosts * a.pages / good_time, 1),
        "rss_start_kib": start_rss, "rss_peak_kib": peak,
        "rss_per_host_peak_b": round((peak - start_rss) * 1024 / a.hosts, 1),
        "fds_max": max(s[2] or 0 for s in samples),
        "after": after,
        "rss_per_host_after_b": round((after["rss_kib"] - start_rss) * 1024 / a.hosts, 1) if after else None,
        "elapsed_s": round(elapsed, 2),
        "exit": crawler.returncode,
        "finish_reason": stats.get("finish_reason"),
        "stats": {k: v for k, v in stats.items() if k.startswith(("slot/", "downloader/exception", "downloader/fd",
                                                                   "downloader/slow", "robotstxt/", "scheduler/slots",
                                                                   "downloader/request_count", "response_received"))},
        "loadavg_before": load0, "loadavg_after": os.getloadavg(),
        "out": out,
    }
    json.dump(result, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
