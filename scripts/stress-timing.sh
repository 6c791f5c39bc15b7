#!/usr/bin/env bash
# Runs the timing suites (politeness, politeness_multiprocess, hostile) N times
# quiet and N times with both cores kept busy, and prints pass/fail counts.
#
#   scripts/stress-timing.sh [RUNS]      # RUNS per condition, default 10
#
# Load comes from `stress-ng --cpu $(nproc)` when it is installed, else from one
# shell busy loop per core. The suites are built once; the loop runs their
# binaries directly, so it measures the tests, not cargo.
set -uo pipefail
cd "$(dirname "$0")/.."

runs=${1:-10}
suites=(politeness politeness_multiprocess hostile)
logs=$(mktemp -d)

# One build; `--no-run` prints each test binary's path as JSON.
mapfile -t bins < <(
    cargo test -p spindle-cli "${suites[@]/#/--test=}" --no-run --message-format=json 2>/dev/null |
        grep '"profile":{[^}]*"test":true' | grep -o '"executable":"[^"]*"' | cut -d'"' -f4
)
if [ "${#bins[@]}" -ne "${#suites[@]}" ]; then
    echo "build failed: cargo test -p spindle-cli ${suites[*]/#/--test=} --no-run" >&2
    exit 2
fi

load_pids=()
start_load() {
    local cores
    cores=$(nproc)
    if command -v stress-ng >/dev/null; then
        stress-ng --cpu "$cores" --quiet &
        load_pids+=($!)
    else
        for _ in $(seq "$cores"); do
            sh -c 'while :; do :; done' &
            load_pids+=($!)
        done
    fi
}
stop_load() {
    for pid in "${load_pids[@]}"; do
        kill "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    done
    load_pids=()
}
trap stop_load EXIT

declare -A failures
# run_all LABEL: runs every suite RUNS times; prints and sets `passed` (runs
# in which all suites passed) and counts each suite's failures.
run_all() {
    local label=$1 i bin ok name log
    passed=0
    for i in $(seq "$runs"); do
        ok=1
        for bin in "${bins[@]}"; do
            name=$(basename "$bin" | sed 's/-[0-9a-f]*$//')
            log="$logs/$label-$i-$name.log"
            if ! "$bin" >"$log" 2>&1; then
                ok=0
                failures[$label $name]=$((${failures[$label $name]:-0} + 1))
                echo "  $label run $i: $name failed:"
                grep -E '^test .* FAILED$' -A0 "$log" | sed 's/^/    /'
                grep -E -A1 '^thread .* panicked at' "$log" | grep -v '^thread\|^--' | cut -c1-200 | sed 's/^/    /'
            fi
        done
        passed=$((passed + ok))
        echo "$label run $i: $([ $ok = 1 ] && echo pass || echo FAIL) (load $(cut -d' ' -f1 /proc/loadavg))"
    done
}

run_all quiet
quiet=$passed
start_load
sleep 2
run_all busy
busy=$passed
stop_load

echo "quiet: $quiet/$runs runs passed"
echo "busy:  $busy/$runs runs passed"
for key in "${!failures[@]}"; do
    echo "  $key failed in ${failures[$key]} runs"
done
echo "logs: $logs"
[ "$quiet" -eq "$runs" ] && [ "$busy" -eq "$runs" ]
