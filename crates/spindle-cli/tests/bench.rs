//! `spindle bench` crawls its own local site for the given time and reports a positive rate.
#![cfg(feature = "bench")]

use std::process::Command;

#[test]
fn bench_for_one_second_reports_pages_per_minute() {
    let dir = tempfile::tempdir().unwrap();
    let stats = dir.path().join("stats.json");
    let out = Command::new(env!("CARGO_BIN_EXE_spindle"))
        .args(["bench", "--seconds", "1", "--stats"])
        .arg(&stats)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run spindle bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // "spindle bench: N pages in T s = R pages/min (…)"
    let rate: f64 = stdout
        .split(" = ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|r| r.parse().ok())
        .unwrap_or_else(|| panic!("no rate in {stdout:?}"));
    assert!(rate > 0.0, "{stdout}");
    let stats: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&stats).unwrap()).unwrap();
    assert_eq!(stats["finish_reason"], "closespider_timeout");
    assert!(stats["response_received_count"].as_u64().unwrap() > 0);
    assert_eq!(stats["downloader/exception_count"].as_u64().unwrap_or(0), 0);
    let elapsed = stats["elapsed_time_seconds"].as_f64().unwrap();
    assert!((1.0..10.0).contains(&elapsed), "{elapsed}");
}

#[test]
fn bench_rejects_a_bad_duration() {
    let out = Command::new(env!("CARGO_BIN_EXE_spindle"))
        .args(["bench", "--seconds", "0"])
        .output()
        .expect("run spindle bench");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--seconds"));
}
