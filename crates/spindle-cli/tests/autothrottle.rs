//! AutoThrottle and its adaptive mode, judged from the server's side: what
//! the test server had in flight, how long its queue was, and how far apart
//! requests arrived.

mod common;

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use spindle_testsite::{max_in_flight, start_gaps, Load, Page, Record, Site, TestServer};

const LIMIT: Duration = Duration::from_secs(60);

fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, last)
}

/// A server with one host, a.test, serving `site`; and the URL of its root.
fn serve(site: Site) -> (TestServer, String) {
    let server = TestServer::builder()
        .host("a.test", ip(2), site)
        .start()
        .unwrap();
    let url = server.url("a.test", "/");
    (server, url)
}

/// Crawls `url` with robots.txt off and these `NAME=VALUE` settings; expects success.
fn crawl(server: &TestServer, url: &str, settings: &[&str]) {
    let mut args = vec![url, "-s", "ROBOTSTXT_OBEY=false"];
    for s in settings {
        args.extend(["-s", s]);
    }
    let run = common::crawl(server, &args, LIMIT);
    assert_eq!(run.code, 0, "{}", run.stderr);
}

/// Mean number of requests the server had in flight over `[from, to]`
/// (times since the server's epoch), from its records.
fn mean_in_flight(records: &[Record], from: Duration, to: Duration) -> f64 {
    let busy: f64 = records
        .iter()
        .map(|r| {
            let s = r.start.max(from);
            let e = r.end.min(to);
            e.saturating_sub(s).as_secs_f64()
        })
        .sum();
    busy / (to - from).as_secs_f64()
}

#[test]
fn autothrottle_settles_near_the_target_concurrency() {
    // Latency = 100 ms × (1 + in flight / 2): the more it is sent at once, the slower it gets.
    let site = Site::generated(3000)
        .links_per_page(8)
        .load(Load::growing(Duration::from_millis(100), 0.5));
    let (server, url) = serve(site);
    crawl(
        &server,
        &url,
        &[
            "AUTOTHROTTLE_ENABLED=true",
            "AUTOTHROTTLE_START_DELAY=0.3",
            "AUTOTHROTTLE_TARGET_CONCURRENCY=3",
            "CONCURRENT_REQUESTS_PER_DOMAIN=5",
            "CLOSESPIDER_TIMEOUT=7",
        ],
    );
    let records = server.records();
    let first = records.iter().map(|r| r.start).min().unwrap();
    let last = records.iter().map(|r| r.start).max().unwrap();
    // After a 2 s warm-up, until the last request started.
    let from = first + Duration::from_secs(2);
    let mean = mean_in_flight(&records, from, last);
    eprintln!(
        "requests {}, mean in flight after warm-up {mean:.2} (target 3), max {}",
        records.len(),
        max_in_flight(&records)
    );
    assert!(
        (mean - 3.0).abs() <= 0.3 * 3.0,
        "mean in flight {mean:.2}, target 3"
    );
    // The per-slot cap stays in force.
    assert!(max_in_flight(&records) <= 5);
}

#[test]
fn overload_answers_raise_the_delay_at_once() {
    // Requests 40 to 44 are answered 503; the rest 200, after 20 ms.
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    let site = Site::generated(3000)
        .links_per_page(8)
        .latency(Duration::from_millis(20))
        .handler(move |_| {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            (40..45)
                .contains(&n)
                .then(|| Page::new("/", 503, "<html>busy</html>"))
        });
    let (server, url) = serve(site);
    crawl(
        &server,
        &url,
        &[
            "RETRY_ENABLED=false",
            "AUTOTHROTTLE_ENABLED=true",
            "AUTOTHROTTLE_START_DELAY=0.02",
            "AUTOTHROTTLE_MAX_DELAY=2",
            "CLOSESPIDER_PAGECOUNT=60",
        ],
    );
    let mut records = server.records();
    records.sort_by_key(|r| r.start);
    let first_503 = records.iter().position(|r| r.status == 503).unwrap();
    let gaps = start_gaps(&records);
    let mut before: Vec<f64> = gaps[10..first_503 - 1]
        .iter()
        .map(|g| g.as_secs_f64())
        .collect();
    before.sort_by(f64::total_cmp);
    let median_before = before[before.len() / 2];
    // The biggest gap from the first 503 on, before the delay comes back down.
    let after = gaps[first_503..first_503 + 8]
        .iter()
        .map(|g| g.as_secs_f64())
        .fold(0.0, f64::max);
    eprintln!("median gap before {median_before:.3} s, largest after the 503s {after:.3} s");
    // Five doublings from about 20 ms reach about 640 ms; latency alone never
    // rises above ~25 ms here, and non-200 answers alone never raise a delay.
    assert!(after >= 0.3, "largest gap after the 503s {after:.3} s");
    assert!(
        after >= 8.0 * median_before,
        "{after:.3} vs {median_before:.3}"
    );
}

#[test]
fn adaptive_mode_finds_a_hosts_capacity_and_keeps_its_queue_short() {
    // The host serves 6 requests at a time, 100 ms each, and queues the rest.
    let load = Load::capacity(6, Duration::from_millis(100));
    let site = Site::generated(5000).links_per_page(10).load(load.clone());
    let (server, _) = serve(site);
    let dir = tempfile::tempdir().unwrap();
    let mut child = common::background(
        &server,
        dir.path(),
        &[
            "-s",
            "AUTOTHROTTLE_ENABLED=true",
            "-s",
            "AUTOTHROTTLE_MODE=adaptive",
            "-s",
            "CONCURRENT_REQUESTS=32",
            "-s",
            "CONCURRENT_REQUESTS_PER_DOMAIN=32",
            "-s",
            "CLOSESPIDER_TIMEOUT=8",
            "--report",
            "report.html",
        ],
        &[],
    );
    // Warm-up: the limit starts at 1 and searches.
    std::thread::sleep(Duration::from_secs(3));
    // The report is rewritten during the crawl.
    let live = std::fs::read_to_string(dir.path().join("report.html")).unwrap();
    assert!(live.contains("running (") && live.contains("<svg id=\"concurrency\""));
    load.reset_stats();
    let window = Duration::from_secs(4);
    std::thread::sleep(window);
    let stats = load.stats();
    assert_eq!(common::wait(&mut child, LIMIT), 0);
    let done = std::fs::read_to_string(dir.path().join("report.html")).unwrap();
    assert!(done.contains("finished (closespider_timeout)"));
    assert!(
        done.contains("adaptive concurrency"),
        "the report names the adaptive limit"
    );
    let waiting = stats.mean_waiting_over(window);
    let in_flight = stats.in_flight_seconds / window.as_secs_f64();
    let rate = stats.requests as f64 / window.as_secs_f64();
    eprintln!(
        "after warm-up: {rate:.1} requests/s (capacity 60/s), mean in flight {in_flight:.2}, \
         mean waiting {waiting:.2}, most waiting {}",
        stats.max_waiting
    );
    assert!(waiting <= 1.0, "mean waiting {waiting:.2}");
    assert!(
        (5.0..=8.0).contains(&in_flight),
        "mean in flight {in_flight:.2}, capacity 6"
    );
}
