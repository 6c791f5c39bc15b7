//! Jobs (`--job DIR`, `-s JOBDIR=DIR`): a crawl killed with SIGKILL at random
//! instants and rerun each time ends with every reachable page in the output
//! exactly once, and the server saw no page twice but those in flight at a kill.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant, SystemTime};

use common::{background, reachable, wait};
use serde_json::Value;
use spindle_testsite::{normalize_path, Site, TestServer};

const LIMIT: Duration = Duration::from_secs(60);
const KILLS: usize = 5;

/// A small xorshift generator seeded from the clock; the seed is printed so a
/// failing run can be replayed with SPINDLE_TEST_SEED.
struct Rng(u64);

impl Rng {
    fn new() -> Self {
        let seed = std::env::var("SPINDLE_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
                    | 1
            });
        eprintln!("SPINDLE_TEST_SEED={seed}");
        Rng(seed)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn item_paths(file: &Path, origin: &str) -> Vec<String> {
    // A run killed during start-up may not have made the file yet.
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("whole JSON lines after every kill");
            normalize_path(v["url"].as_str().unwrap().strip_prefix(origin).unwrap())
        })
        .collect()
}

/// Serves the site as a.test; the server and its origin.
fn serve(site: &Site) -> (TestServer, String) {
    let server = TestServer::builder()
        .host("a.test", Ipv4Addr::new(127, 0, 0, 2), site.clone())
        .start()
        .unwrap();
    let origin = server.url("a.test", "");
    (server, origin)
}

fn kill(child: &mut Child) {
    // SIGKILL; an error only means it had already finished.
    let _ = child.kill();
    let _ = child.wait();
}

/// Kills the job's crawl at `KILLS` random instants, reruns it to the end,
/// and checks the output and the server's records.
fn killed_and_resumed(extra: &[&str]) {
    let site = Site::generated(500)
        .links_per_page(5)
        .latency(Duration::from_millis(25));
    let (server, origin) = serve(&site);
    let dir = tempfile::tempdir().unwrap();
    let mut args = vec!["--job", "job"];
    args.extend_from_slice(extra);
    let mut rng = Rng::new();
    let mut kills = Vec::new();
    for _ in 0..KILLS {
        let mut child = background(&server, dir.path(), &args, &[]);
        // Past start-up most of the time, but before a whole crawl can end.
        std::thread::sleep(Duration::from_millis(150 + rng.below(900)));
        kills.push(server.epoch().elapsed());
        kill(&mut child);
        // The output is whole records at every kill.
        item_paths(&dir.path().join("items.jsonl"), &origin);
    }
    let mut child = background(&server, dir.path(), &args, &[]);
    assert_eq!(wait(&mut child, LIMIT), 0, "the last run finishes");

    let want = reachable(&site, &origin, None);
    let items = item_paths(&dir.path().join("items.jsonl"), &origin);
    let mut count: BTreeMap<&str, usize> = BTreeMap::new();
    for p in &items {
        *count.entry(p).or_default() += 1;
    }
    let twice: Vec<_> = count.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "items written more than once: {twice:?}");
    let got: BTreeSet<String> = items.iter().cloned().collect();
    let lost: Vec<_> = want.difference(&got).collect();
    assert!(
        lost.is_empty(),
        "{} pages lost, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    assert_eq!(got, want);

    // A page fetched again must have been fetched before a kill and not yet
    // committed: its earlier fetch ended at most a commit interval (and the
    // time to parse it and write its items, on a loaded machine) before a kill.
    let slack = Duration::from_secs(2);
    let mut fetches: BTreeMap<String, Vec<(Duration, Duration)>> = BTreeMap::new();
    for r in common::pages(server.records()) {
        fetches
            .entry(normalize_path(&r.path))
            .or_default()
            .push((r.start, r.end));
    }
    let mut refetched = 0;
    for (path, times) in &fetches {
        for (start, end) in &times[..times.len() - 1] {
            refetched += 1;
            assert!(
                kills.iter().any(|k| *start <= *k && *k <= *end + slack),
                "{path} fetched again though its fetch at {start:?}–{end:?} was not in flight at a kill ({kills:?})"
            );
        }
    }
    eprintln!(
        "{} pages, {} fetches, {refetched} fetched again after {KILLS} kills at {kills:?}",
        want.len(),
        fetches.values().map(Vec::len).sum::<usize>()
    );

    // The finished job says so, and a rerun fetches nothing.
    let before = server.records().len();
    let mut child = background(&server, dir.path(), &args, &[]);
    assert_eq!(wait(&mut child, LIMIT), 0);
    assert_eq!(
        server.records().len(),
        before,
        "a finished job fetches nothing"
    );
    assert_eq!(
        item_paths(&dir.path().join("items.jsonl"), &origin).len(),
        want.len()
    );
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_spindle"))
        .args(["job", "status", "--json"])
        .arg(dir.path().join("job"))
        .output()
        .unwrap();
    assert!(status.status.success());
    let status: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["finished"], true);
    assert_eq!(status["queued"], 0);
    assert_eq!(status["pages_done"], want.len() as u64);
}

#[test]
fn sigkill_at_random_instants_loses_nothing_and_repeats_nothing() {
    killed_and_resumed(&[]);
}

#[test]
fn sigkill_at_random_instants_with_worker_processes() {
    killed_and_resumed(&["--processes", "3"]);
}

#[test]
fn a_job_stopped_gracefully_resumes_where_it_stopped() {
    let site = Site::generated(200)
        .links_per_page(4)
        .latency(Duration::from_millis(20));
    let (server, origin) = serve(&site);
    let dir = tempfile::tempdir().unwrap();
    let args = ["--job", "job", "-s", "CLOSESPIDER_PAGECOUNT=50"];
    let mut child = background(&server, dir.path(), &args, &[]);
    assert_eq!(wait(&mut child, LIMIT), 0);
    let first = item_paths(&dir.path().join("items.jsonl"), &origin).len();
    assert!(first >= 50, "{first} items");
    let mut child = background(&server, dir.path(), &["--job", "job"], &[]);
    assert_eq!(wait(&mut child, LIMIT), 0);
    let items = item_paths(&dir.path().join("items.jsonl"), &origin);
    let got: BTreeSet<String> = items.iter().cloned().collect();
    assert_eq!(items.len(), got.len(), "no page twice");
    assert_eq!(got, reachable(&site, &origin, None));
    let fetched = common::pages(server.records()).len();
    assert_eq!(
        fetched,
        got.len(),
        "the second run fetched only what the first had not"
    );
}

#[test]
fn job_status_without_a_job_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let run = common::spindle(&["job", "status", &dir.path().display().to_string()], LIMIT);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("holds no job"), "{}", run.stderr);
    assert!(started.elapsed() < LIMIT);
}

/// The URLs a JSON or CSV output holds, checking it parses whole.
fn urls_in(file: &Path) -> Vec<String> {
    let Ok(text) = std::fs::read_to_string(file) else {
        return Vec::new();
    };
    if file.extension().is_some_and(|e| e == "json") {
        let v: Value = serde_json::from_str(&text).expect("one whole JSON array after every kill");
        v.as_array()
            .unwrap()
            .iter()
            .map(|i| i["url"].as_str().unwrap().to_string())
            .collect()
    } else {
        assert!(text.is_empty() || text.ends_with('\n'), "whole CSV rows");
        let mut r = csv::Reader::from_reader(text.as_bytes());
        r.records()
            .map(|row| row.expect("a whole row")[0].to_string())
            .collect()
    }
}

#[test]
fn json_and_csv_outputs_stay_whole_and_exact_across_kills() {
    let site = Site::generated(300)
        .links_per_page(5)
        .latency(Duration::from_millis(25));
    let (server, origin) = serve(&site);
    let want = reachable(&site, &origin, None);
    let mut rng = Rng::new();
    for name in ["items.json", "items.csv"] {
        let dir = tempfile::tempdir().unwrap();
        let args = ["--job", "job", "-o", name];
        for _ in 0..3 {
            let mut child = background(&server, dir.path(), &args, &[]);
            std::thread::sleep(Duration::from_millis(150 + rng.below(600)));
            kill(&mut child);
            urls_in(&dir.path().join(name));
        }
        let mut child = background(&server, dir.path(), &args, &[]);
        assert_eq!(wait(&mut child, LIMIT), 0);
        let urls = urls_in(&dir.path().join(name));
        let paths: BTreeSet<String> = urls
            .iter()
            .map(|u| normalize_path(u.strip_prefix(&origin).unwrap()))
            .collect();
        assert_eq!(urls.len(), paths.len(), "{name}: no page twice");
        assert_eq!(paths, want, "{name}: every page");
    }
}

#[test]
fn a_resumed_job_keeps_its_robots_txt_rules_without_fetching_them_again() {
    let site = Site::generated(120)
        .links_per_page(4)
        .latency(Duration::from_millis(10))
        .robots_txt("User-agent: *\nDisallow: /p/3\n");
    let (server, origin) = serve(&site);
    let dir = tempfile::tempdir().unwrap();
    let obey = ["--job", "job", "-s", "ROBOTSTXT_OBEY=true"];
    let mut first: Vec<&str> = obey.to_vec();
    first.extend(["-s", "CLOSESPIDER_PAGECOUNT=10"]);
    let mut child = background(&server, dir.path(), &first, &[]);
    assert_eq!(wait(&mut child, LIMIT), 0);
    let mut child = background(&server, dir.path(), &obey, &[]);
    assert_eq!(wait(&mut child, LIMIT), 0);
    let records = server.records();
    let robots = records.iter().filter(|r| r.path == "/robots.txt").count();
    assert_eq!(robots, 1, "robots.txt came back from the job's store");
    // `Disallow: /p/3` is a prefix: /p/30–/p/39 are out too.
    let allowed = |p: &str| !p.starts_with("/p/3");
    assert!(
        records.iter().all(|r| allowed(&r.path)),
        "the resumed run obeyed the kept rules"
    );
    let items = item_paths(&dir.path().join("items.jsonl"), &origin);
    let got: BTreeSet<String> = items.iter().cloned().collect();
    assert_eq!(items.len(), got.len());
    // Every page reachable through allowed pages only.
    let mut want = BTreeSet::from(["/".to_string()]);
    let mut todo = vec!["/".to_string()];
    while let Some(p) = todo.pop() {
        for href in site.links(&p, &origin) {
            let href = href.strip_prefix(&origin).unwrap_or(&href).to_string();
            let q = normalize_path(href.split('#').next().unwrap());
            if allowed(&q) && want.insert(q.clone()) {
                todo.push(q);
            }
        }
    }
    assert_eq!(got, want);
}

/// Counters that count each page, item or request once (see docs/jobs.md,
/// "Stats"): a job killed and resumed ends with the same as one run.
/// (`request_depth_max` is left out: the depth a page is first found at
/// depends on the order of the crawl, which a resume changes.)
const JOB_WIDE: &[&str] = &[
    "item_scraped_count",
    "response_received_count",
    "downloader/request_count",
    "downloader/request_method_count/GET",
    "downloader/response_count",
    "downloader/response_status_count/200",
    "downloader/response_bytes",
    "scheduler/enqueued",
    "scheduler/dequeued",
    "dupefilter/filtered",
];

fn counters(dir: &Path) -> BTreeMap<&'static str, u64> {
    let text = std::fs::read_to_string(dir.join("stats.json")).expect("the last run's stats");
    let stats: Value = serde_json::from_str(&text).unwrap();
    JOB_WIDE
        .iter()
        .map(|k| (*k, stats[*k].as_u64().unwrap_or(0)))
        .collect()
}

/// Runs the job once whole, and once killed with SIGKILL at 3 random
/// instants and rerun to its end, and compares the counters.
fn counters_across_kills(extra: &[&str]) {
    let site = Site::generated(500)
        .links_per_page(5)
        .latency(Duration::from_millis(25));
    let (server, _) = serve(&site);
    let mut args = vec!["--job", "job"];
    args.extend_from_slice(extra);

    let whole = tempfile::tempdir().unwrap();
    let mut child = background(&server, whole.path(), &args, &[]);
    assert_eq!(wait(&mut child, LIMIT), 0);
    let want = counters(whole.path());
    assert!(want["response_received_count"] > 500, "{want:?}");
    assert!(want["dupefilter/filtered"] > 0, "{want:?}");

    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng::new();
    let mut kills = 0;
    for _ in 0..3 {
        let mut child = background(&server, dir.path(), &args, &[]);
        std::thread::sleep(Duration::from_millis(150 + rng.below(900)));
        if child.try_wait().unwrap().is_none() {
            kills += 1;
        }
        kill(&mut child);
    }
    let mut child = background(&server, dir.path(), &args, &[]);
    assert_eq!(wait(&mut child, LIMIT), 0);
    let fetches = common::pages(server.records()).len();
    let got = counters(dir.path());
    eprintln!("{kills} kills; {fetches} page fetches in all; counters {got:?}");
    assert!(kills > 0, "no run was killed mid-crawl");
    // The kills made the server answer some pages twice, yet the job counted each once.
    assert!(
        fetches > 2 * want["response_received_count"] as usize,
        "{fetches} fetches"
    );
    assert_eq!(got, want, "job-wide counters after kills and reruns");

    // A finished job's rerun fetches nothing and reports the same counters.
    let mut child = background(&server, dir.path(), &args, &[]);
    assert_eq!(wait(&mut child, LIMIT), 0);
    assert_eq!(counters(dir.path()), want);
}

#[test]
fn counters_after_sigkills_and_reruns_equal_one_uninterrupted_run() {
    counters_across_kills(&[]);
}

#[test]
fn counters_across_kills_with_worker_processes() {
    counters_across_kills(&["--processes", "3"]);
}
