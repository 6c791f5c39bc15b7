#!/usr/bin/env bash
# Side-by-side benchmark: spindle vs Scrapy 2.19 crawling Debian's python3-doc (the Python
# 3.11 HTML docs) served by nginx on loopback, plus `spindle bench` vs `scrapy bench`, the
# physical limits (nginx's own rate with wrk, the parser's raw extraction rate), a 30,000+
# page crawl with RSS sampled over time, and the seen-set's bytes per URL. GNU Wget2
# (Debian's wget2, `-r -l 0 --max-threads=16 --robots=off --delete-after`) runs next to both
# on the Python docs, and against spindle alone on the Rust docs (Debian's rust-doc, 21,600
# pages, on port PORT+1).
#
#   sudo bench/python-docs.sh            # RUNS=3 pairs by default; RUNS=5 for more
#   SKIP=docs,rust,big,benches,limits sudo bench/python-docs.sh   # only --processes 1 vs 2
#
# Idempotent: installs only what is missing, reuses its virtualenv, restarts its own nginx
# (own config and pid file, port 8080; the system nginx service is left alone). Needs root for
# apt-get, and a Rust toolchain. Results: $WORK/results.md and $WORK/results.json.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
WORK=${SPINDLE_BENCH_DIR:-/var/tmp/spindle-bench}
RUNS=${RUNS:-3}
PORT=${PORT:-8080}
mkdir -p "$WORK"

# 1. Packages: nginx, the docs, wrk, GNU time, venv.
need=()
for pkg in nginx python3-doc rust-doc wget2 wrk time python3-venv; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if ((${#need[@]})); then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
DOCS=$(readlink -f /usr/share/doc/python3/html)
[ -f "$DOCS/index.html" ] || { echo "python3-doc's HTML is not at $DOCS" >&2; exit 1; }
RUSTDOCS=/usr/share/doc/rust-doc/html
[ -f "$RUSTDOCS/index.html" ] || { echo "rust-doc's HTML is not at $RUSTDOCS" >&2; exit 1; }

# 2. Scrapy 2.19 in a virtualenv (Debian's python3, so both crawlers use packaged parts).
VENV=$WORK/venv
if ! "$VENV/bin/scrapy" version 2>/dev/null | grep -q '^Scrapy 2\.19\.'; then
  /usr/bin/python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q 'scrapy==2.19.*'
fi

# 3. spindle, release build.
cargo build --release -q -p spindle-cli
cargo build --release -q -p spindle --example extract_rate --example seen_set_memory

# 4. The big site: 60 copies of the docs (symlinks, so 60 × 530 = 31,800 distinct HTML
#    pages of real content) under one index page.
BIG=$WORK/bigsite
if [ ! -f "$BIG/index.html" ]; then
  mkdir -p "$BIG"
  {
    echo '<!DOCTYPE html><html><head><title>Python docs, 60 copies</title></head><body><ul>'
    for i in $(seq -w 1 60); do
      ln -sfn "$DOCS" "$BIG/copy$i"
      echo "<li><a href=\"/copy$i/index.html\">copy $i</a></li>"
    done
    echo '</ul></body></html>'
  } > "$BIG/index.html"
fi

# 5. nginx: its own config, pid file and logs. gzip off (wrk and both crawlers get the same bytes).
cat > "$WORK/nginx.conf" <<CONF
worker_processes auto;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log;
events { worker_connections 4096; }
http {
  include /etc/nginx/mime.types;
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 1000000;
  gzip off;
  server { listen 127.0.0.1:$PORT; server_name docs.test; root $DOCS; index index.html; }
  server { listen 127.0.0.1:$PORT; server_name big.test; root $BIG; index index.html; }
  # The Rust docs on the next port, as its default server, so that wget2 (which has no
  # --resolve) reaches it by address.
  server { listen 127.0.0.1:$((PORT + 1)); server_name rust.test; root $RUSTDOCS; index index.html; }
}
CONF
stop_nginx() {
  if [ -f "$WORK/nginx.pid" ]; then
    kill "$(cat "$WORK/nginx.pid")" 2>/dev/null || true
    for _ in $(seq 50); do [ -f "$WORK/nginx.pid" ] || break; sleep 0.1; done
  fi
}
stop_nginx
nginx -c "$WORK/nginx.conf"
trap stop_nginx EXIT
for _ in $(seq 50); do
  curl -fsS -o /dev/null -H 'Host: docs.test' "http://127.0.0.1:$PORT/" && break
  sleep 0.1
done

# 6. The measurements.
/usr/bin/python3 "$ROOT/bench/compare.py" \
  --root "$ROOT" --work "$WORK" --venv "$VENV" --docs "$DOCS" --port "$PORT" --runs "$RUNS" \
  --skip "${SKIP:-}"
