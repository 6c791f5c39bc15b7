//! `--processes N`: worker processes that die (really killed) cost nothing
//! but time, a page that kills its workers costs that page only, and no
//! process outlives the crawler.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use common::{background, reachable, signal, wait};
use serde_json::Value;
use spindle_testsite::{normalize_path, Site, TestServer};

const LIMIT: Duration = Duration::from_secs(90);

fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, last)
}

/// The pids of a process's children, from /proc.
fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for task in tasks.flatten() {
            if let Ok(text) = std::fs::read_to_string(task.path().join("children")) {
                out.extend(
                    text.split_whitespace()
                        .filter_map(|p| p.parse::<u32>().ok()),
                );
            }
        }
    }
    out
}

fn alive(pid: u32) -> bool {
    // A zombie has exited; only a process still running counts.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.split_whitespace()
                .nth(2)
                .is_some_and(|state| state != "Z")
        })
        .unwrap_or(false)
}

fn item_paths(dir: &std::path::Path, origin: &str) -> Vec<String> {
    std::fs::read_to_string(dir.join("items.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("whole JSON lines");
            normalize_path(v["url"].as_str().unwrap().strip_prefix(origin).unwrap())
        })
        .collect()
}

fn counts(paths: &[String]) -> HashMap<&str, usize> {
    let mut m = HashMap::new();
    for p in paths {
        *m.entry(p.as_str()).or_default() += 1;
    }
    m
}

#[test]
fn a_worker_killed_mid_crawl_loses_no_page() {
    let site = Site::generated(600)
        .links_per_page(6)
        .latency(Duration::from_millis(20));
    let server = TestServer::builder()
        .host("a.test", ip(2), site.clone())
        .start()
        .unwrap();
    let origin = server.url("a.test", "");
    let dir = tempfile::tempdir().unwrap();
    let mut child = background(&server, dir.path(), &["--processes", "3"], &[]);

    // Wait until the crawl is well under way, then SIGKILL one worker.
    let deadline = Instant::now() + Duration::from_secs(20);
    while server.records().len() < 100 {
        assert!(Instant::now() < deadline, "the crawl did not start");
        std::thread::sleep(Duration::from_millis(10));
    }
    let workers = children(child.id());
    assert_eq!(workers.len(), 3, "three workers: {workers:?}");
    signal("-KILL", workers[1]);
    let fetched_at_kill = server.records().len();

    assert_eq!(wait(&mut child, LIMIT), 0);
    assert!(
        fetched_at_kill < 550,
        "the kill came mid-crawl ({fetched_at_kill} fetched)"
    );
    let paths = item_paths(dir.path(), &origin);
    let dupes: Vec<_> = counts(&paths).into_iter().filter(|(_, n)| *n > 1).collect();
    assert!(dupes.is_empty(), "pages output twice: {dupes:?}");
    let got: BTreeSet<String> = paths.into_iter().collect();
    assert_eq!(
        got,
        reachable(&site, &origin, None),
        "every page exactly once"
    );

    let stats: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("stats.json")).unwrap())
            .unwrap();
    assert_eq!(stats["worker/died_count"], 1);
    let reports = stats["workers"].as_array().unwrap();
    assert_eq!(
        reports.len(),
        4,
        "three workers and one replacement: {reports:?}"
    );
    let killed = reports.iter().find(|w| w["pid"] == workers[1]).unwrap();
    assert_eq!(killed["exit_code"], -9, "reported with its pid and signal");
}

#[test]
fn a_page_that_aborts_its_parser_costs_that_page_only() {
    let site = Site::generated(200).links_per_page(6);
    let server = TestServer::builder()
        .host("a.test", ip(3), site.clone())
        .start()
        .unwrap();
    let origin = server.url("a.test", "");
    let dir = tempfile::tempdir().unwrap();
    // The worker aborts (SIGABRT) whenever it parses /p/17.
    let mut child = background(
        &server,
        dir.path(),
        &["--processes", "2"],
        &[("SPINDLE_FAULT_ABORT_ON", "/p/17")],
    );
    assert_eq!(wait(&mut child, LIMIT), 0);

    let paths = item_paths(dir.path(), &origin);
    let got: BTreeSet<String> = paths.iter().cloned().collect();
    assert_eq!(got.len(), paths.len(), "no page output twice");
    let mut expected = reachable(&site, &origin, Some("/p/17"));
    expected.remove("/p/17");
    assert_eq!(got, expected, "every other page, exactly once");

    let tries = server
        .records()
        .iter()
        .filter(|r| r.path == "/p/17")
        .count();
    assert_eq!(tries, 3, "tried on three workers, then given up");
    let stats: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("stats.json")).unwrap())
            .unwrap();
    assert_eq!(stats["worker/gave_up_count"], 1);
    assert_eq!(stats["finish_reason"], "finished");
    let aborted = stats["workers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["exit_code"] == -6)
        .count();
    assert_eq!(aborted, 3, "three workers died of SIGABRT");
}

#[test]
fn ctrl_c_stops_every_process_gracefully() {
    let site = Site::generated(3000)
        .links_per_page(8)
        .latency(Duration::from_millis(300));
    let server = TestServer::builder()
        .host("a.test", ip(4), site)
        .start()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut child = background(&server, dir.path(), &["--processes", "3"], &[]);
    std::thread::sleep(Duration::from_millis(1500));
    let workers = children(child.id());
    assert_eq!(workers.len(), 3);
    // As a terminal does: SIGINT to the crawler and to its workers alike.
    signal("-INT", child.id());
    for w in &workers {
        signal("-INT", *w);
    }
    assert_eq!(wait(&mut child, Duration::from_secs(15)), 0);
    assert!(
        workers.iter().all(|w| !alive(*w)),
        "no worker outlives the crawler"
    );
    let stats: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("stats.json")).unwrap())
            .unwrap();
    assert_eq!(stats["finish_reason"], "shutdown");
    assert!(
        stats["worker/died_count"].is_null(),
        "workers exited, none died: {stats:#}"
    );
    let items = std::fs::read_to_string(dir.path().join("items.jsonl"))
        .unwrap()
        .lines()
        .count();
    let pages = server.records().iter().filter(|r| r.status == 200).count();
    assert_eq!(items, pages, "every page downloaded is in the output");
}

#[test]
fn workers_die_with_a_killed_crawler() {
    let site = Site::generated(3000).latency(Duration::from_millis(300));
    let server = TestServer::builder()
        .host("a.test", ip(5), site)
        .start()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut child = background(&server, dir.path(), &["--processes", "2"], &[]);
    std::thread::sleep(Duration::from_millis(1000));
    let workers = children(child.id());
    assert_eq!(workers.len(), 2);
    signal("-KILL", child.id());
    let _ = child.wait();
    let deadline = Instant::now() + Duration::from_secs(5);
    while workers.iter().any(|w| alive(*w)) {
        assert!(Instant::now() < deadline, "orphaned workers: {workers:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
