//! Benchmark half run by `bench/exec/run.sh` beside `bench/exec/python_pool.py`.
//! Prints one JSON object per line: {"metric", "value", "unit"} (medians over repeats).
//! Build with `--release`.

use serde_bytes::ByteBuf;
use spindle_exec::Pool;
use std::time::{Duration, Instant};

fn noop(x: u64) -> u64 {
    x
}

fn sqr(x: u64) -> u64 {
    x.wrapping_mul(x)
}

fn echo(b: ByteBuf) -> ByteBuf {
    b
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn emit(metric: &str, value: f64, unit: &str) {
    println!("{{\"metric\": \"{metric}\", \"value\": {value:.6}, \"unit\": \"{unit}\"}}");
}

fn main() -> spindle_exec::Result<()> {
    spindle_exec::init();
    let repeats: usize = std::env::var("BENCH_REPEATS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let procs = spindle_exec::cpu_count();
    let pool = Pool::with_processes(procs)?;
    let t = Duration::from_secs(120);
    // BENCH_ONLY=rtt,map,map1,payload runs a subset (for profiling).
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    let want = |m: &str| only.is_empty() || only.split(',').any(|o| o == m);

    // 1. apply_async(...).get() round trip.
    if want("rtt") {
        for _ in 0..200 {
            pool.apply_async(noop, 1)?.get_timeout(t)?;
        }
        let mut per = Vec::new();
        for _ in 0..repeats {
            let n = 2000;
            let t0 = Instant::now();
            for i in 0..n {
                pool.apply_async(noop, i)?.get_timeout(t)?;
            }
            per.push(t0.elapsed().as_secs_f64() / n as f64 * 1e6);
        }
        emit("apply_async_get_rtt", median(per), "us");
    }

    // 2. map over 100,000 tiny tasks (default chunksize).
    if want("map") {
        let mut per = Vec::new();
        for _ in 0..repeats {
            let t0 = Instant::now();
            let r = pool.map_timeout(sqr, 0..100_000u64, None, t)?;
            per.push(100_000.0 / t0.elapsed().as_secs_f64());
            assert_eq!(r.len(), 100_000);
        }
        emit("map_100k_default_chunksize", median(per), "tasks/s");
    }

    // 2b. map with chunksize=1 (every task a round trip), 20,000 tasks.
    if want("map1") {
        let mut per = Vec::new();
        for _ in 0..repeats {
            let t0 = Instant::now();
            let r = pool.map_timeout(sqr, 0..20_000u64, Some(1), t)?;
            per.push(20_000.0 / t0.elapsed().as_secs_f64());
            assert_eq!(r.len(), 20_000);
        }
        emit("map_20k_chunksize_1", median(per), "tasks/s");
    }

    // 3. 16 MiB payload round trip (argument there, result back).
    if want("payload") {
        let payload = ByteBuf::from(vec![0xabu8; 16 << 20]);
        for _ in 0..3 {
            pool.apply_async(echo, payload.clone())?.get_timeout(t)?;
        }
        let mut per = Vec::new();
        for _ in 0..repeats.max(5) {
            let p = payload.clone();
            let t0 = Instant::now();
            let r = pool.apply_async(echo, p)?.get_timeout(t)?;
            let dt = t0.elapsed().as_secs_f64();
            assert_eq!(r.len(), 16 << 20);
            per.push(dt);
        }
        let dt = median(per);
        emit("payload_16MiB_rtt", dt * 1e3, "ms");
        emit(
            "payload_16MiB_throughput",
            2.0 * (16u64 << 20) as f64 / dt / 1e9,
            "GB/s",
        );
    }
    pool.close();
    pool.join_timeout(t)?;
    Ok(())
}
