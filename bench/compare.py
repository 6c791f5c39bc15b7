#!/usr/bin/env python3
"""The measurements behind docs/benchmarks.md; run by bench/python-docs.sh, which sets up
nginx, the docs and Scrapy first. Standard library only.

Each spindle/Scrapy pair runs back to back (order alternating), under /usr/bin/time -v.
The machine is shared and has 2 cores, so every figure is the median of RUNS runs.
"""

import argparse
import datetime
import json
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from urllib.parse import urldefrag

SETTINGS = {"CONCURRENT_REQUESTS": 16, "CONCURRENT_REQUESTS_PER_DOMAIN": 16}


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw).stdout.strip()


def timed(cmd, cwd, env=None, ok=(0,)):
    """Runs cmd under GNU time; returns (wall s, cpu s, peak RSS MB, stderr text)."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as tf:
        proc = subprocess.run(
            ["/usr/bin/time", "-v", "-o", tf.name] + cmd,
            cwd=cwd, env=env, capture_output=True, text=True,
        )
        report = tf.read()
    if proc.returncode not in ok:
        sys.exit(f"{cmd[0]} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")

    def field(name):
        return re.search(re.escape(name) + r"[^\n]*?: (\S+)", report).group(1)

    wall = 0.0
    for part in field("Elapsed (wall clock) time").split(":"):
        wall = wall * 60 + float(part)
    cpu = float(field("User time")) + float(field("System time"))
    rss = int(field("Maximum resident set size")) / 1024
    return wall, cpu, rss, proc.stderr


def items(path):
    out = {}
    with open(path) as f:
        for line in f:
            item = json.loads(line)
            out[urldefrag(item["url"])[0]] = item.get("title")
    return out


def wget2(a, port):
    """GNU Wget2 over a whole site: 16 threads, robots.txt off, every file deleted once parsed,
    quiet (its progress output costs it CPU). It asks for the site's default server by address
    (no /etc/hosts entry needed), and exits 8 for the sites' few broken links. It also fetches
    the pages' CSS, scripts and images (26 more files on the Python docs); its pages/s counts
    the HTML pages spindle found. Returns (wall, cpu, rss)."""
    d = tempfile.mkdtemp(prefix="wget2-", dir=a.work)
    try:
        wall, cpu, rss, _ = timed(
            ["wget2", "-q", "-r", "-l", "0", "--max-threads=16", "--robots=off", "--delete-after",
             "-P", d, f"http://127.0.0.1:{port}/"], a.work, ok=(0, 8))
    finally:
        shutil.rmtree(d, ignore_errors=True)
    return wall, cpu, rss


def spindle_crawl(a, host, port, out):
    cmd = [a.spindle, "crawl", f"http://{host}:{port}/", "--resolve", f"{host}:{port}:127.0.0.1",
           "--field", "title=title", "-s", "LOGSTATS_INTERVAL=0", "-o", out]
    for k, v in SETTINGS.items():
        cmd += ["-s", f"{k}={v}"]
    return timed(cmd, a.work, dict(os.environ, RUST_LOG="warn"))


def crawl_pair(a, i):
    base = f"http://docs.test:{a.port}/"
    runs = {}
    who3 = ["spindle", "scrapy", "wget2"]
    order = who3[i % 3:] + who3[:i % 3]
    for who in order:
        if who == "wget2":
            wall, cpu, rss = wget2(a, a.port)
            runs[who] = {"wall": wall, "cpu": cpu, "rss": rss}
            print(f"  run {i + 1} {who:8}: wall {wall:.2f} s, cpu {cpu:.2f} s, rss {rss:.0f} MB",
                  flush=True)
            continue
        out = os.path.join(a.work, f"{who}-{i}.jsonl")
        if os.path.exists(out):
            os.remove(out)
        if who == "spindle":
            wall, cpu, rss, _ = spindle_crawl(a, "docs.test", a.port, out)
        else:
            cmd = [os.path.join(a.venv, "bin", "scrapy"), "crawl", "follow", "-a", f"url={base}",
                   "-O", out]
            for k, v in SETTINGS.items():
                cmd += ["-s", f"{k}={v}"]
            env = dict(os.environ, BENCH_RESOLVE="docs.test=127.0.0.1")
            wall, cpu, rss, _ = timed(cmd, os.path.join(a.root, "bench", "scrapy_docs"), env)
        pages = items(out)
        runs[who] = {"wall": wall, "cpu": cpu, "rss": rss, "pages": len(pages),
                     "pages_per_s": len(pages) / wall, "items": pages}
        print(f"  run {i + 1} {who:8}: {len(pages)} pages, wall {wall:.2f} s, cpu {cpu:.2f} s, "
              f"rss {rss:.0f} MB", flush=True)
    w = runs["wget2"]
    w["pages"] = runs["spindle"]["pages"]
    w["pages_per_s"] = w["pages"] / w["wall"]
    s, c = runs["spindle"]["items"], runs["scrapy"]["items"]
    if set(s) != set(c):
        sys.exit(f"the crawlers found different pages: only spindle {sorted(set(s) - set(c))[:5]}, "
                 f"only Scrapy {sorted(set(c) - set(s))[:5]}")
    differing = [u for u in s if (s[u] or None) != (c[u] or None)]
    for r in runs.values():
        del r["items"]
    runs["title_mismatches"] = len(differing)
    runs["title_mismatch_examples"] = differing[:3]
    return runs


def rust_docs(a):
    """spindle against wget2 on the Rust docs (rust-doc, 21,600 pages), alternating."""
    port = a.port + 1
    runs = []
    for i in range(a.runs):
        run = {}
        for who in (["spindle", "wget2"] if i % 2 == 0 else ["wget2", "spindle"]):
            if who == "wget2":
                wall, cpu, rss = wget2(a, port)
                n = None
            else:
                out = os.path.join(a.work, "rust-docs.jsonl")
                if os.path.exists(out):
                    os.remove(out)
                wall, cpu, rss, _ = spindle_crawl(a, "rust.test", port, out)
                n = len(items(out))
            run[who] = {"wall": wall, "cpu": cpu, "rss": rss, "pages": n,
                        "load": os.getloadavg()[0]}
            print(f"  run {i + 1} {who:8}: wall {wall:.2f} s, cpu {cpu:.2f} s, "
                  f"rss {rss:.0f} MB, load {run[who]['load']:.1f}", flush=True)
        # wget2's pages/s counts the HTML pages spindle found (it fetches other files too).
        run["wget2"]["pages"] = run["spindle"]["pages"]
        for who in run:
            run[who]["pages_per_s"] = run[who]["pages"] / run[who]["wall"]
        runs.append(run)
    return {who: {k: med(runs, who, k) for k in ("wall", "cpu", "rss", "pages", "pages_per_s", "load")}
            for who in ("spindle", "wget2")}


def wrk_rate(a, urls):
    lua = os.path.join(a.work, "paths.lua")
    paths = sorted(u.split(f":{a.port}", 1)[1] for u in urls)
    with open(lua, "w") as f:
        f.write("paths = {" + ",".join(json.dumps(p) for p in paths) + "}\n")
        f.write('i = 0\nrequest = function()\n  i = i % #paths + 1\n'
                '  return wrk.format("GET", paths[i], {Host = "docs.test"})\nend\n')
    rates = []
    for _ in range(a.runs):
        out = sh(["wrk", "-t2", "-c16", "-d5s", "-s", lua, f"http://127.0.0.1:{a.port}/"])
        rates.append(float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)))
        mb = re.search(r"Transfer/sec:\s+([\d.]+)(\w+)", out)
    return {"rates": rates, "median": statistics.median(rates), "paths": len(paths),
            "transfer_last": mb.group(1) + mb.group(2)}


def scrapy_bench(a):
    rates = []
    for _ in range(a.runs):
        with tempfile.TemporaryDirectory() as d:
            err = subprocess.run([os.path.join(a.venv, "bin", "scrapy"), "bench"], cwd=d,
                                 capture_output=True, text=True).stderr
        n = int(re.search(r"'response_received_count': (\d+)", err).group(1))
        t = float(re.search(r"'elapsed_time_seconds': ([\d.]+)", err).group(1))
        rates.append(n / t * 60)
        print(f"  scrapy bench: {n} pages in {t:.1f} s = {n / t * 60:.0f} pages/min", flush=True)
    return rates


def spindle_bench(a):
    rates = []
    for _ in range(a.runs):
        out = sh([a.spindle, "bench"], env=dict(os.environ, RUST_LOG="warn"))
        print("  " + out, flush=True)
        rates.append(float(re.search(r"= (\d+) pages/min", out).group(1)))
    return rates


def big_crawl(a):
    """Crawls 60 copies of the docs (31,800+ HTML pages), sampling RSS and pages done."""
    out = os.path.join(a.work, "big.jsonl")
    cmd = [a.spindle, "crawl", f"http://big.test:{a.port}/", "--resolve",
           f"big.test:{a.port}:127.0.0.1", "--field", "title=title", "-s", "LOGSTATS_INTERVAL=0",
           "-o", out]
    for k, v in SETTINGS.items():
        cmd += ["-s", f"{k}={v}"]
    if os.path.exists(out):
        os.remove(out)
    started = time.monotonic()
    proc = subprocess.Popen(cmd, stderr=subprocess.DEVNULL, env=dict(os.environ, RUST_LOG="warn"))
    samples = []
    while proc.poll() is None:
        try:
            with open(f"/proc/{proc.pid}/status") as f:
                rss = int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1)) / 1024
            with open(out, "rb") as f:
                done = f.read().count(b"\n")
            if rss > 0:
                samples.append((round(time.monotonic() - started, 2), done, round(rss, 1)))
        except (OSError, AttributeError):
            pass
        time.sleep(0.1)
    wall = time.monotonic() - started
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        sys.exit("big crawl failed")
    pages = sum(1 for _ in open(out))
    html = sum(1 for line in open(out) if json.loads(line).get("title") is not None)
    return {"pages": pages, "html_pages": html, "wall": wall, "pages_per_s": pages / wall,
            "peak_rss": max(s[2] for s in samples) if samples else None,
            "maxrss_children_mb": usage.ru_maxrss / 1024, "samples": samples}


def processes_compare(a):
    """--processes 1 vs 2 on the docs site (RUNS runs each) and the 60-copy site (once each):
    wall, CPU of the crawler and all its workers (GNU time counts reaped children), pages/s."""
    out = {}
    for site, host, runs in (("docs", "docs.test", a.runs), ("big", "big.test", 1)):
        for n in (1, 2):
            rows = []
            for i in range(runs):
                path = os.path.join(a.work, f"proc{n}-{site}-{i}.jsonl")
                cmd = [a.spindle, "crawl", f"http://{host}:{a.port}/", "--resolve",
                       f"{host}:{a.port}:127.0.0.1", "--field", "title=title",
                       "-s", "LOGSTATS_INTERVAL=0", "--processes", str(n), "-o", path]
                for k, v in SETTINGS.items():
                    cmd += ["-s", f"{k}={v}"]
                wall, cpu, rss, _ = timed(cmd, a.work, dict(os.environ, RUST_LOG="warn"))
                pages = sum(1 for _ in open(path))
                rows.append({"wall": wall, "cpu": cpu, "rss": rss, "pages": pages,
                             "pages_per_s": pages / wall})
                print(f"  {site} --processes {n}: {pages} pages, wall {wall:.2f} s, "
                      f"cpu {cpu:.2f} s", flush=True)
            out[f"{site}-{n}"] = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    return out


def machine():
    cpu = re.search(r"model name\s*: (.+)", open("/proc/cpuinfo").read())
    mem = int(re.search(r"MemTotal:\s+(\d+)", open("/proc/meminfo").read()).group(1))
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": os.cpu_count(), "cpu": cpu.group(1) if cpu else platform.processor(),
        "ram_gib": round(mem / 1024 / 1024, 1), "kernel": platform.release(),
    }


def med(runs, who, key):
    return statistics.median(r[who][key] for r in runs)


def main():
    p = argparse.ArgumentParser()
    for opt in ("root", "work", "venv", "docs"):
        p.add_argument("--" + opt, required=True)
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--skip", default="", help="comma list: docs,rust,big,benches,limits,processes")
    a = p.parse_args()
    a.spindle = os.path.join(a.root, "target", "release", "spindle")
    skip = set(filter(None, a.skip.split(",")))
    res = {"machine": machine(), "runs": a.runs, "versions": {
        "spindle": sh(["git", "-C", a.root, "rev-parse", "--short", "HEAD"]),
        "scrapy": sh([os.path.join(a.venv, "bin", "scrapy"), "version"]),
        "nginx": subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip(),
        "python3-doc": sh(["dpkg-query", "-W", "-f=${Version}", "python3-doc"]),
        "rustc": sh(["rustc", "--version"]),
        "wget2": sh(["wget2", "--version"]).splitlines()[0],
    }}
    if "docs" not in skip:
        print(f"== docs crawl, {a.runs} pairs", flush=True)
        pairs = [crawl_pair(a, i) for i in range(a.runs)]
        res["pairs"] = pairs
        summary = {}
        for who in ("spindle", "scrapy", "wget2"):
            summary[who] = {k: med(pairs, who, k)
                            for k in ("wall", "cpu", "rss", "pages", "pages_per_s")}
        summary["ratio"] = {
            "wall": summary["scrapy"]["wall"] / summary["spindle"]["wall"],
            "cpu": summary["scrapy"]["cpu"] / summary["spindle"]["cpu"],
            "rss": summary["scrapy"]["rss"] / summary["spindle"]["rss"],
            "pages_per_s": summary["spindle"]["pages_per_s"] / summary["scrapy"]["pages_per_s"],
        }
        res["docs"] = summary
    if "rust" not in skip:
        print(f"== Rust docs, spindle vs wget2, {a.runs} pairs", flush=True)
        res["rust"] = rust_docs(a)
    if "processes" not in skip:
        print("== --processes 1 vs 2", flush=True)
        res["processes"] = processes_compare(a)
    if "limits" not in skip:
        print("== limits", flush=True)
        if not os.path.exists(os.path.join(a.work, "spindle-0.jsonl")):
            sys.exit("the limits need the docs crawl's URLs: do not skip docs")
        urls = items(os.path.join(a.work, "spindle-0.jsonl"))
        res["wrk"] = wrk_rate(a, urls)
        print(f"  nginx (wrk, 16 connections): {res['wrk']['median']:.0f} requests/s", flush=True)
        ex = os.path.join(a.root, "target", "release", "examples", "extract_rate")
        res["extract"] = sh([ex, a.docs, "3"])
        print("  " + res["extract"].replace("\n", "\n  "), flush=True)
        sm = os.path.join(a.root, "target", "release", "examples", "seen_set_memory")
        res["seen_set"] = sh([sm, "10000000"])
        print("  " + res["seen_set"].splitlines()[-1], flush=True)
    if "benches" not in skip:
        print("== spindle bench / scrapy bench", flush=True)
        res["spindle_bench"] = spindle_bench(a)
        res["scrapy_bench"] = scrapy_bench(a)
    if "big" not in skip:
        print("== 60 copies of the docs", flush=True)
        res["big"] = big_crawl(a)
        b = res["big"]
        print(f"  {b['pages']} pages ({b['html_pages']} HTML) in {b['wall']:.1f} s = "
              f"{b['pages_per_s']:.0f} pages/s, peak RSS {b['peak_rss']} MB", flush=True)
    with open(os.path.join(a.work, "results.json"), "w") as f:
        json.dump(res, f, indent=1)
    md = report(res)
    with open(os.path.join(a.work, "results.md"), "w") as f:
        f.write(md)
    print("\n" + md)


def report(r):
    m = r["machine"]
    lines = [
        f"Machine: {m['nproc']} cores ({m['cpu']}), {m['ram_gib']} GiB RAM, Linux {m['kernel']}, "
        f"{m['date']}. spindle {r['versions']['spindle']}, {r['versions']['scrapy']}, "
        f"{r['versions']['nginx']}, python3-doc {r['versions']['python3-doc']}. "
        f"Medians of {r['runs']} runs.",
    ]
    if "docs" in r:
        lines += docs_report(r)
    if "rust" in r:
        s, w = r["rust"]["spindle"], r["rust"]["wget2"]
        lines += ["", "| Rust docs, whole site | pages | wall s | CPU s | peak RSS MB | pages/s | load |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for name, x in (("spindle", s), (r["versions"]["wget2"], w)):
            lines.append(f"| {name} | {x['pages']:.0f} | {x['wall']:.2f} | {x['cpu']:.2f} | {x['rss']:.0f} | "
                         f"{x['pages_per_s']:.0f} | {x['load']:.1f} |")
        lines.append(f"| wget2 ÷ spindle | | {w['wall'] / s['wall']:.2f}× | {w['cpu'] / s['cpu']:.2f}× | | |  |")
    if "processes" in r:
        lines += ["", "| --processes | site | pages | wall s | CPU s (all processes) | pages/s | peak RSS MB (largest process) |",
                  "|---:|---|---:|---:|---:|---:|---:|"]
        for key, row in r["processes"].items():
            site, n = key.rsplit("-", 1)
            lines.append(f"| {n} | {site} | {row['pages']:.0f} | {row['wall']:.2f} | {row['cpu']:.2f} | "
                         f"{row['pages_per_s']:.0f} | {row['rss']:.0f} |")
    return finish_report(r, lines)


def docs_report(r):
    d = r["docs"]
    s, c, w, x = d["spindle"], d["scrapy"], d["wget2"], d["ratio"]
    return [
        "",
        "| Python docs, whole site | pages | wall s | CPU s | peak RSS MB | pages/s |",
        "|---|---:|---:|---:|---:|---:|",
        f"| spindle | {s['pages']:.0f} | {s['wall']:.2f} | {s['cpu']:.2f} | {s['rss']:.0f} | {s['pages_per_s']:.0f} |",
        f"| Scrapy 2.19 | {c['pages']:.0f} | {c['wall']:.2f} | {c['cpu']:.2f} | {c['rss']:.0f} | {c['pages_per_s']:.0f} |",
        f"| Scrapy ÷ spindle | | {x['wall']:.0f}× | {x['cpu']:.0f}× | {x['rss']:.1f}× | {x['pages_per_s']:.0f}× (spindle ÷ Scrapy) |",
        f"| {r['versions']['wget2']} | {w['pages']:.0f} | {w['wall']:.2f} | {w['cpu']:.2f} | {w['rss']:.0f} | {w['pages_per_s']:.0f} |",
        f"| wget2 ÷ spindle | | {w['wall'] / s['wall']:.2f}× | {w['cpu'] / s['cpu']:.2f}× | | |",
        "",
        "Per run (spindle / Scrapy wall s): " + ", ".join(
            f"{p['spindle']['wall']:.2f} / {p['scrapy']['wall']:.2f}" for p in r["pairs"]),
        "Title mismatches per run: " + ", ".join(str(p["title_mismatches"]) for p in r["pairs"]),
    ]


def finish_report(r, lines):
    if "spindle_bench" in r:
        sb, cb = statistics.median(r["spindle_bench"]), statistics.median(r["scrapy_bench"])
        lines += ["", "| bench (10 s, local site) | pages/min, median | runs |", "|---|---:|---|",
                  f"| spindle bench | {sb:.0f} | {', '.join(f'{v:.0f}' for v in r['spindle_bench'])} |",
                  f"| scrapy bench | {cb:.0f} | {', '.join(f'{v:.0f}' for v in r['scrapy_bench'])} |",
                  f"| ratio | {sb / cb:.0f}× | |"]
    if "wrk" in r:
        lines += ["", f"nginx alone (wrk -t2 -c16, cycling the {r['wrk']['paths']} crawled URLs): "
                  f"{r['wrk']['median']:.0f} requests/s (runs: "
                  f"{', '.join(f'{v:.0f}' for v in r['wrk']['rates'])})", "",
                  "Parser alone (examples/extract_rate on the same files):", "```",
                  r["extract"], "```", "", "Seen-set memory (examples/seen_set_memory):", "```",
                  r["seen_set"], "```"]
    if "big" in r:
        b = r["big"]
        smp = b["samples"]
        marks = []
        if smp:
            last = smp[-1][1] or 1
            for frac in (0.1, 0.25, 0.5, 0.75, 1.0):
                t, done, rss = next((s for s in smp if s[1] >= frac * last), smp[-1])
                marks.append(f"| {t:.1f} | {done} | {rss:.0f} |")
        lines += ["", f"60 copies of the docs: {b['pages']} pages ({b['html_pages']} HTML) in "
                  f"{b['wall']:.1f} s = {b['pages_per_s']:.0f} pages/s, peak RSS {b['peak_rss']} MB.",
                  "", "| s | pages written | RSS MB |", "|---:|---:|---:|"] + marks
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
