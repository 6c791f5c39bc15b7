//! A crawl of a hostile server: every good page exactly once, every hostile
//! one contained, timings respected, time and memory bounded — all judged
//! from the server's records and from outside the crawler process.

mod common;

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use common::{crawl_with, Run};
use serde_json::Value;
use spindle_testsite::faults::GOOD_PAGES;
use spindle_testsite::{FaultServer, Record, Site, TestServer};

const LIMIT: Duration = Duration::from_secs(90);

fn fault_server() -> FaultServer {
    FaultServer::start(Ipv4Addr::new(127, 0, 0, 9)).unwrap()
}

fn hostile_crawl(server: &FaultServer) -> Run {
    let start = server.url("hostile.test", "/");
    crawl_with(
        &server.resolve_args(&["hostile.test"]),
        &[
            &start,
            "--field",
            "title=title",
            "-s",
            "DOWNLOAD_TIMEOUT=2",
            "-s",
            "DOWNLOAD_MAXSIZE=8000000",
            "-s",
            "DOWNLOAD_WARNSIZE=1000000",
            "-s",
            "RETRY_BACKOFF_BASE=0.8",
        ],
        LIMIT,
    )
}

fn hits(records: &[Record]) -> HashMap<String, Vec<&Record>> {
    let mut by_path: HashMap<String, Vec<&Record>> = HashMap::new();
    for r in records {
        by_path.entry(r.path.clone()).or_default().push(r);
    }
    by_path
}

#[test]
fn a_hostile_site_costs_its_hostile_pages_only() {
    let server = fault_server();
    let run = hostile_crawl(&server);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let records = server.records();
    let by_path = hits(&records);
    let stats = run.stats();
    let stat = |k: &str| stats[k].as_u64().unwrap_or(0);
    if std::env::var_os("SPINDLE_SHOW_STATS").is_some() {
        eprintln!(
            "{stats:#}\npeak RSS {} KiB, {:?}",
            run.peak_rss_kib, run.elapsed
        );
    }

    // Every good page, including those only linked from hostile ones, exactly once.
    let mut good: Vec<String> = (0..GOOD_PAGES).map(|i| format!("/good/{i}")).collect();
    good.extend(
        [
            "from-deep",
            "from-many",
            "from-bad-urls",
            "from-bad-bytes",
            "from-latin1",
        ]
        .iter()
        .map(|n| format!("/good/{n}")),
    );
    for path in &good {
        assert_eq!(
            by_path.get(path).map_or(0, Vec::len),
            1,
            "{path} fetched once"
        );
    }
    let items = run.items();
    let urls: Vec<&str> = items.iter().map(|i| i["url"].as_str().unwrap()).collect();
    for path in &good {
        assert!(
            urls.iter().any(|u| u.ends_with(path.as_str())),
            "{path} has an item"
        );
    }

    // robots.txt: fetched first and once; /private never; Crawl-delay 0.25 s held.
    assert_eq!(records[0].path, "/robots.txt");
    assert_eq!(by_path["/robots.txt"].len(), 1);
    assert!(!by_path.contains_key("/private/secret"));
    assert_eq!(stat("robotstxt/forbidden"), 1);
    common::assert_delay_floor(&run, "hostile.test", &records, Duration::from_millis(250));

    // Retries with backoff: /flaky twice, the second after the backoff pause.
    let flaky = &by_path["/flaky"];
    assert_eq!(
        flaky.iter().map(|r| r.status).collect::<Vec<_>>(),
        [500, 200]
    );
    assert!(
        flaky[1].start - flaky[0].start >= Duration::from_millis(400),
        "backoff ≥ RETRY_BACKOFF_BASE/2, longer than the 0.25 s Crawl-delay"
    );
    // Retry-After: 2 s honoured before the second try.
    let limited = &by_path["/ratelimited"];
    assert_eq!(
        limited.iter().map(|r| r.status).collect::<Vec<_>>(),
        [429, 200]
    );
    let waited = limited[1].start - limited[0].end;
    assert!(
        waited >= Duration::from_millis(1950),
        "Retry-After: waited {waited:?}"
    );
    assert!(
        urls.iter().any(|u| u.ends_with("/flaky"))
            && urls.iter().any(|u| u.ends_with("/ratelimited"))
    );

    // Each failure is counted under its own name; network failures were retried.
    for (kind, min) in [
        ("TimeoutError", 2),         // /hang and /trickle
        ("ConnectionResetError", 1), // /reset-mid-body (and /reset, by kind of reset)
        ("PartialDownloadError", 1), // /short-body
        ("HeaderTooLargeError", 1),  // /giant-header
        ("DownloadMaxSizeError", 2), // /bomb (decompressed) and /endless
    ] {
        let n = stat(&format!("downloader/exception_type_count/{kind}"));
        assert!(n >= min, "{kind}: {n} in {stats:#}");
    }
    assert_eq!(by_path["/hang"].len(), 3, "a timeout is retried twice");
    // A size limit is not retried (a bomb can still time out first on a loaded machine).
    assert!(by_path["/bomb"].len() <= 3);
    assert_eq!(
        by_path["/giant-header"].len(),
        1,
        "a broken response is not retried"
    );
    // The trickle was cut off at DOWNLOAD_TIMEOUT, not when it ended.
    for r in &by_path["/trickle"] {
        assert!(
            r.end - r.start < Duration::from_millis(3500),
            "trickle held {:?}",
            r.end - r.start
        );
    }

    // Redirects: the loop is stopped by the dupefilter, the offsite one dropped.
    assert_eq!(by_path["/redirect-loop"].len(), 1);
    assert_eq!(by_path["/redirect-loop-2"].len(), 1);
    assert_eq!(stat("redirect/offsite"), 1);
    assert_eq!(stat("offsite/filtered"), 1);

    // Content: binary not parsed for links; bad URLs skipped and counted; charsets honoured.
    assert!(!by_path.contains_key("/good/never-from-binary"));
    assert!(
        stat("linkextractor/skipped_links") >= 100_000,
        "javascript: links on /many-links"
    );
    let latin1 = items
        .iter()
        .find(|i| i["url"].as_str().unwrap().ends_with("/latin1"))
        .unwrap();
    assert_eq!(latin1["title"], "café");
    assert_eq!(
        stat("downloader/warnsize_count"),
        1,
        "/many-links is over 1 MB"
    );

    // Bounded: time (hang and trickle cost 3 × 2 s each, in parallel) and memory.
    assert!(
        run.elapsed < Duration::from_secs(60),
        "took {:?}",
        run.elapsed
    );
    assert!(
        run.peak_rss_kib < 200 * 1024,
        "peak RSS {} KiB",
        run.peak_rss_kib
    );
    assert_eq!(stats["finish_reason"], "finished");
}

#[test]
fn unreachable_robots_txt_disallows_and_a_missing_one_allows() {
    let server = fault_server();
    let run = crawl_with(
        &server.resolve_args(&["robots503.test", "norobots.test"]),
        &[
            &server.url("robots503.test", "/"),
            &server.url("norobots.test", "/good/0"),
            "-s",
            "RETRY_BACKOFF_BASE=0.05",
        ],
        LIMIT,
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let records = server.records();
    let of = |host: &str| -> Vec<(String, u16)> {
        records
            .iter()
            .filter(|r| r.host == host)
            .map(|r| (r.path.clone(), r.status))
            .collect()
    };
    let down = of("robots503.test");
    assert_eq!(
        down.len(),
        3,
        "robots.txt tried 1 + 2 retries, then nothing else: {down:?}"
    );
    assert!(down.iter().all(|(p, s)| p == "/robots.txt" && *s == 503));
    assert_eq!(
        of("norobots.test"),
        [
            ("/robots.txt".to_string(), 404),
            ("/good/0".to_string(), 200)
        ]
    );
    assert_eq!(run.stats()["robotstxt/forbidden"], 1);
}

#[test]
fn retry_after_pauses_one_site_while_others_go_on() {
    let faults = fault_server();
    let site = TestServer::builder()
        .host(
            "calm.test",
            Ipv4Addr::new(127, 0, 0, 10),
            Site::generated(60),
        )
        .start()
        .unwrap();
    let mut resolve = faults.resolve_args(&["busy.test"]);
    resolve.extend(site.resolve_args());
    let run = crawl_with(
        &resolve,
        &[
            &faults.url("busy.test", "/ratelimited"),
            &site.url("calm.test", "/"),
            "-s",
            "ROBOTSTXT_OBEY=false",
        ],
        LIMIT,
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let busy = faults.records();
    assert_eq!(busy.len(), 2);
    let pause = (busy[0].end, busy[1].start);
    assert!(pause.1 - pause.0 >= Duration::from_millis(1950));
    // The calm site was crawled whole, and mostly while the busy one was paused.
    let calm = site.records();
    assert_eq!(calm.len(), 61);
    let faults_to_site = site.epoch().duration_since(faults.epoch());
    let during = calm
        .iter()
        .filter(|r| r.start + faults_to_site > pause.0 && r.start + faults_to_site < pause.1)
        .count();
    let calm_starts: Vec<f64> = calm
        .iter()
        .map(|r| (r.start + faults_to_site).as_secs_f64())
        .collect();
    assert!(
        during > 30,
        "only {during} calm pages during the pause {:.3}..{:.3} s; calm starts: {calm_starts:.3?}",
        pause.0.as_secs_f64(),
        pause.1.as_secs_f64()
    );
    let _: Value = run.stats();
}
