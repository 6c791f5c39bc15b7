#!/usr/bin/env bash
# AutoThrottle's adaptive mode against the best fixed concurrency: a test-site host
# serves K requests at a time (100 ms each) and queues the rest; the crawl sweeps
# CONCURRENT_REQUESTS_PER_DOMAIN 1..32, then runs AUTOTHROTTLE_MODE=adaptive with a cap
# of 32. Throughput and the server's mean queue are measured by the server after a
# warm-up. Loopback only, no setup.
#
#   bench/adaptive.sh [K=6] [SECONDS=4]
#
# Prints a Markdown table (kept in docs/benchmarks.md) and writes docs/adaptive-sweep.svg.
set -euo pipefail
cd "$(dirname "$0")/.."
K=${1:-6}
SECONDS_MEASURED=${2:-4}
cargo build --release -q -p spindle --example adaptive_sweep
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) cores"
target/release/examples/adaptive_sweep "$K" "$SECONDS_MEASURED" docs/adaptive-sweep.svg
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
