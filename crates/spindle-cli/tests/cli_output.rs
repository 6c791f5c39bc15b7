//! `-o -`, the log flags, CLOSESPIDER_* counts, and an unreachable start URL.

mod common;

use std::net::Ipv4Addr;
use std::time::Duration;

use common::{crawl, crawl_with, spindle};
use serde_json::Value;
use spindle_testsite::{Site, TestServer};

const LIMIT: Duration = Duration::from_secs(60);

fn server(pages: usize) -> TestServer {
    TestServer::builder()
        .host(
            "a.test",
            Ipv4Addr::new(127, 0, 0, 2),
            Site::generated(pages),
        )
        .start()
        .unwrap()
}

#[test]
fn dash_writes_json_lines_to_stdout_and_logs_to_stderr() {
    let s = server(5);
    let start = s.url("a.test", "/");
    let run = crawl(&s, &[&start, "-o", "-", "-L", "INFO"], LIMIT);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let items: Vec<Value> = run
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("each stdout line is a JSON item"))
        .collect();
    assert_eq!(items.len(), 6, "{}", run.stdout);
    assert!(run.stderr.contains("spider opened"), "logs go to stderr");
    assert!(
        !run.stderr.contains('\u{1b}'),
        "no colour codes when stderr is not a terminal"
    );
}

#[test]
fn nolog_logfile_and_loglevel() {
    let s = server(3);
    let start = s.url("a.test", "/");
    let quiet = crawl(&s, &[&start, "--nolog"], LIMIT);
    assert_eq!(quiet.code, 0, "{}", quiet.stderr);
    assert!(!quiet.stderr.contains("spider opened"), "{}", quiet.stderr);
    assert!(
        quiet.stderr.contains("finish_reason"),
        "the stats are still printed"
    );

    let log = tempfile::tempdir().unwrap();
    let file = log.path().join("crawl.log");
    let logged = crawl(
        &s,
        &[
            &start,
            "--logfile",
            &file.display().to_string(),
            "-L",
            "DEBUG",
        ],
        LIMIT,
    );
    assert_eq!(logged.code, 0, "{}", logged.stderr);
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        text.contains("spider opened") && text.contains("DEBUG"),
        "{text}"
    );
    assert!(!text.contains('\u{1b}'));
    assert!(!logged.stderr.contains("spider opened"));
}

/// Issue 13: PAGECOUNT counts pages, not robots.txt; ITEMCOUNT stops after N items.
#[test]
fn closespider_counts_pages_and_items() {
    let s = server(200);
    let start = s.url("a.test", "/");
    let run = crawl(&s, &[&start, "-s", "CLOSESPIDER_PAGECOUNT=1"], LIMIT);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.items().len(), 1, "robots.txt is not a page");
    assert_eq!(run.stats()["finish_reason"], "closespider_pagecount");

    let run = crawl(
        &s,
        &[
            &start,
            "-s",
            "CLOSESPIDER_ITEMCOUNT=5",
            "-s",
            "CONCURRENT_REQUESTS_PER_DOMAIN=1",
        ],
        LIMIT,
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.stats()["finish_reason"], "closespider_itemcount");
    let n = run.items().len();
    assert!((5..20).contains(&n), "{n} items");
}

/// Issue 13, defect 2: an unreachable start URL says so and exits non-zero.
#[test]
fn an_unreachable_start_url_fails() {
    // Nothing listens on port 1 of loopback.
    let run = crawl_with(&[], &["http://127.0.0.1:1/"], LIMIT);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("cannot reach the page"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("no start URL could be fetched"),
        "{}",
        run.stderr
    );
    let stats = run.stats();
    assert!(
        stats["downloader/exception_type_count/ConnectionRefused"].as_u64() > Some(0)
            || stats["downloader/exception_count"].as_u64() > Some(0),
        "{stats}"
    );
    assert_eq!(
        stats["robotstxt/forbidden"],
        Value::Null,
        "not counted as forbidden"
    );
    // Without robots.txt the page itself fails, the same way.
    let run = crawl_with(
        &[],
        &[
            "http://127.0.0.1:1/",
            "-s",
            "ROBOTSTXT_OBEY=false",
            "-s",
            "RETRY_ENABLED=false",
        ],
        LIMIT,
    );
    assert_eq!(run.code, 1, "{}", run.stderr);
}

/// Issue 13, defect 6: `bench --pages 1` crawls one page.
#[test]
fn bench_pages_counts_the_root() {
    let run = spindle(&["bench", "--pages", "1", "--seconds", "5"], LIMIT);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains(": 1 pages in"), "{}", run.stdout);
}
