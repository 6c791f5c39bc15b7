#!/usr/bin/env bash
# Run the spindle-exec benchmark beside Python's multiprocessing and print both and the ratio.
# Usage: bench/exec/run.sh   (env: BENCH_REPEATS=5, PYTHON=python3, CARGO_TARGET_DIR)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target-exec}"
python="${PYTHON:-python3}"
cd "$root"
cargo build --release -p spindle-exec --example bench_vs_python >&2
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(uname -sr), $("$python" --version 2>&1), $(date -u +%Y-%m-%d)"
echo "running Python ($python) ..." >&2
timeout 900 "$python" "$here/python_pool.py" > "$tmp/py.jsonl"
echo "running Rust ..." >&2
timeout 900 "$CARGO_TARGET_DIR/release/examples/bench_vs_python" > "$tmp/rs.jsonl"
"$python" "$here/compare.py" "$tmp/py.jsonl" "$tmp/rs.jsonl"
