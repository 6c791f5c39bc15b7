//! A tiny test runner for integration tests that start processes.
//!
//! libtest owns `main`, so a libtest binary cannot call [`crate::init`]
//! before anything else. Declare the test target with `harness = false` and
//! make its `main` call [`run_tests`], which calls `init()` first, then runs
//! the tests in parallel threads, each bounded by a timeout
//! (`SPINDLE_EXEC_TEST_TIMEOUT` seconds, default 60).
//!
//! ```toml
//! [[test]]
//! name = "integration"
//! harness = false
//! ```
//! ```no_run
//! fn it_works() { assert_eq!(1 + 1, 2); }
//! fn main() {
//!     spindle_exec::testing::run_tests(&[("it_works", it_works)]);
//! }
//! ```
//! Arguments: an optional name filter (substring), `--exact`,
//! `--test-threads N`, `--list`; other libtest flags are ignored.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A named test function.
pub type TestCase = (&'static str, fn());

/// Run `tests` and exit the process with 0 (all passed) or 101.
pub fn run_tests(tests: &[TestCase]) -> ! {
    crate::init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut filter: Option<String> = None;
    let mut exact = false;
    let mut threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .max(2);
    let mut list = false;
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--exact" => exact = true,
            "--list" => list = true,
            "--test-threads" => {
                i += 1;
                if let Some(n) = args.get(i).and_then(|s| s.parse().ok()) {
                    threads = n;
                }
            }
            s if s.starts_with("--test-threads=") => {
                if let Ok(n) = s["--test-threads=".len()..].parse() {
                    threads = n;
                }
            }
            s if s.starts_with('-') => {}
            s => filter = Some(s.to_string()),
        }
        i += 1;
    }
    let selected: Vec<TestCase> = tests
        .iter()
        .copied()
        .filter(|(name, _)| match &filter {
            None => true,
            Some(f) if exact => name == f,
            Some(f) => name.contains(f.as_str()),
        })
        .collect();
    if list {
        for (name, _) in &selected {
            println!("{name}: test");
        }
        std::process::exit(0);
    }
    let timeout = std::env::var("SPINDLE_EXEC_TEST_TIMEOUT")
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(Duration::from_secs(60), Duration::from_secs);
    println!(
        "\nrunning {} tests ({} threads, {}s timeout each)",
        selected.len(),
        threads.max(1),
        timeout.as_secs()
    );
    let start = Instant::now();
    let queue = Arc::new(Mutex::new(selected.clone().into_iter()));
    let (done_tx, done_rx) = mpsc::channel::<(&'static str, Result<Duration, String>)>();
    for _ in 0..threads.max(1) {
        let queue = Arc::clone(&queue);
        let done_tx = done_tx.clone();
        std::thread::spawn(move || loop {
            let next = match queue.lock() {
                Ok(mut q) => q.next(),
                Err(_) => None,
            };
            let Some((name, f)) = next else { break };
            let (tx, rx) = mpsc::channel();
            let t0 = Instant::now();
            let spawned = std::thread::Builder::new()
                .name(name.to_string())
                .spawn(move || {
                    let r = std::panic::catch_unwind(f);
                    let _ = tx.send(r.is_ok());
                });
            let outcome = match spawned {
                Err(e) => Err(format!("could not start: {e}")),
                Ok(_) => match rx.recv_timeout(timeout) {
                    Ok(true) => Ok(t0.elapsed()),
                    Ok(false) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                        Err("panicked".to_string())
                    }
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        Err(format!("TIMED OUT after {}s", timeout.as_secs()))
                    }
                },
            };
            if done_tx.send((name, outcome)).is_err() {
                break;
            }
        });
    }
    drop(done_tx);
    let mut failed = Vec::new();
    let mut passed = 0;
    for (name, outcome) in done_rx {
        match outcome {
            Ok(d) => {
                passed += 1;
                println!("test {name} ... ok ({:.2}s)", d.as_secs_f64());
            }
            Err(why) => {
                println!("test {name} ... FAILED ({why})");
                failed.push(name);
            }
        }
    }
    let status = if failed.is_empty() { "ok" } else { "FAILED" };
    println!(
        "\ntest result: {status}. {passed} passed; {} failed; finished in {:.2}s",
        failed.len(),
        start.elapsed().as_secs_f64()
    );
    if !failed.is_empty() {
        println!("failures:");
        for f in &failed {
            println!("    {f}");
        }
        std::process::exit(101);
    }
    std::process::exit(0);
}
