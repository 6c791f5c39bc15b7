#!/usr/bin/env bash
# JOBDIR against the in-memory frontier, on this machine:
#  1. speed: the Python docs (528 pages), the Rust docs (Debian's rust-doc) and 60 copies of the
#     Python docs (31,800 pages) served by nginx on loopback, crawled with and without --job,
#     alternating, RUNS times each (HOSTS picks the sites: docs.test rust.test big.test);
#  2. memory: `spindle bench --links 100` (each page links to 100 new pages of a 10^9-page site)
#     for MEM_SECONDS with JOBDIR and MEM_SECONDS_INMEMORY (default 10) without, RSS sampled every
#     5 s with the queue length. Without a job RSS grows by about 2 GB every 10 s: keep that one short.
#     20 million queued URLs with a job take about 300 s on this machine: MEM_SECONDS=400.
#
#   bench/jobs.sh                      # RUNS=5 MEM_SECONDS=120 by default; SKIP=speed or SKIP=memory
#
# Needs nginx, python3-doc (bench/python-docs.sh installs them) and rust-doc
# (`apt-get install rust-doc`), and a release build.
# Uses its own nginx (port 8093, config and pid under $WORK); leaves any other nginx alone.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${WORK:-/tmp/jobs-bench}
RUNS=${RUNS:-5}
MEM_SECONDS=${MEM_SECONDS:-120}
MEM_SECONDS_INMEMORY=${MEM_SECONDS_INMEMORY:-10}
PORT=8093
BIN=$PWD/target/release/spindle
mkdir -p "$WORK"
cargo build --release -q -p spindle-cli

if [[ ${SKIP:-} != *speed* ]]; then
  DOCS=$(readlink -f /usr/share/doc/python3/html)
  RUSTDOCS=$(readlink -f /usr/share/doc/rust-doc/html)
  BIG=$WORK/bigsite
  mkdir -p "$BIG"
  {
    echo '<!DOCTYPE html><html><head><title>Python docs, 60 copies</title></head><body><ul>'
    for i in $(seq -w 1 60); do
      ln -sfn "$DOCS" "$BIG/copy$i"
      echo "<li><a href=\"/copy$i/index.html\">copy $i</a></li>"
    done
    echo '</ul></body></html>'
  } > "$BIG/index.html"
  cat > "$WORK/nginx.conf" <<CONF
worker_processes 1;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log;
events { worker_connections 4096; }
http {
  include /etc/nginx/mime.types;
  access_log off;
  sendfile on;
  keepalive_requests 1000000;
  gzip off;
  server { listen 127.0.0.1:$PORT; server_name docs.test; root $DOCS; index index.html; }
  server { listen 127.0.0.1:$PORT; server_name big.test; root $BIG; index index.html; }
  server { listen 127.0.0.1:$PORT; server_name rust.test; root $RUSTDOCS; index index.html; }
}
CONF
  [ -f "$WORK/nginx.pid" ] && kill "$(cat "$WORK/nginx.pid")" 2>/dev/null && sleep 0.5
  nginx -c "$WORK/nginx.conf"
  trap 'kill "$(cat "$WORK/nginx.pid")" 2>/dev/null || true' EXIT
  sleep 0.5
  crawl() { # host, mode(mem|job), run number: prints pages/s, pages, seconds, peak RSS MB
    local host=$1 mode=$2 n=$3 out=$WORK/out-$1-$2-$3
    rm -rf "$out" && mkdir -p "$out"
    local job=()
    [ "$mode" = job ] && job=(--job "$out/job")
    /usr/bin/time -f '%M' -o "$out/rss" "$BIN" crawl "http://$host:$PORT/" \
      --resolve "$host:$PORT:127.0.0.1" -s ROBOTSTXT_OBEY=false -s LOGSTATS_INTERVAL=0 \
      -O "$out/items.jsonl" --stats "$out/stats.json" "${job[@]}" 2>/dev/null
    python3 - "$out" <<'PY'
import json, sys
d = sys.argv[1]
s = json.load(open(d + "/stats.json"))
rss = int(open(d + "/rss").read().split()[-1]) / 1024
n, t = s["response_received_count"], s["elapsed_time_seconds"]
print(f"{n / t:.0f} {n} {t:.3f} {rss:.0f}")
PY
  }
  for host in ${HOSTS:-docs.test rust.test big.test}; do
    for n in $(seq "$RUNS"); do
      for mode in mem job; do
        echo "$host $mode $n $(crawl "$host" "$mode" "$n")  load $(cut -d' ' -f1 /proc/loadavg)"
      done
    done
  done | tee "$WORK/speed.txt"
fi

if [[ ${SKIP:-} != *memory* ]]; then
  for mode in mem job; do
    rm -rf "$WORK/mem-job"
    set=()
    [ "$mode" = job ] && set=(-s "JOBDIR=$WORK/mem-job")
    seconds=$MEM_SECONDS_INMEMORY
    [ "$mode" = job ] && seconds=$MEM_SECONDS
    "$BIN" bench --links 100 --pages 1000000000 --seconds "$seconds" "${set[@]}" \
      --stats "$WORK/mem-$mode.json" 2>/dev/null &
    pid=$!
    start=$(date +%s)
    while kill -0 $pid 2>/dev/null; do
      rss=$(awk '/VmRSS/ {print int($2/1024)}' /proc/$pid/status 2>/dev/null || true)
      hwm=$(awk '/VmHWM/ {print int($2/1024)}' /proc/$pid/status 2>/dev/null || true)
      [ -n "$rss" ] && echo "$mode t=$(( $(date +%s) - start ))s rss=${rss}MB peak=${hwm}MB load $(cut -d' ' -f1 /proc/loadavg)"
      sleep 5
    done
    wait $pid || true
    python3 - "$WORK/mem-$mode.json" "$mode" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
q = s["scheduler/enqueued"] - s["scheduler/dequeued"]
print(f"{sys.argv[2]}: {s['response_received_count']} pages in {s['elapsed_time_seconds']:.0f} s, "
      f"{s['scheduler/enqueued']} queued in all, {q} still queued at the end, "
      f"memusage/max {s.get('memusage/max', 0) / 2**20:.0f} MB")
PY
    if [ "$mode" = job ]; then du -sh "$WORK/mem-job"; rm -rf "$WORK/mem-job"; fi
  done | tee "$WORK/memory.txt"
fi
