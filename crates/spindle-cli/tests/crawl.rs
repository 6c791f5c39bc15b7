//! What a crawl fetches and writes: exactly-once, depth, domains, items, stats.

mod common;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::Ipv4Addr;
use std::time::Duration;

use common::{crawl, pages, reachable};
use serde_json::Value;
use spindle_testsite::{duplicates, normalize_path, Site, TestServer};

const LIMIT: Duration = Duration::from_secs(120);

fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, last)
}

/// A site link as the crawler should see it: path and query, no origin or fragment.
fn local_path(href: &str, origin: &str) -> String {
    let href = href.strip_prefix(origin).unwrap_or(href);
    normalize_path(href.split('#').next().unwrap())
}

#[test]
fn every_page_of_a_2000_page_site_exactly_once() {
    let site = Site::generated(2000)
        .links_per_page(10)
        .query_variants(true);
    let server = TestServer::builder()
        .host("a.test", ip(2), site.clone())
        .start()
        .unwrap();
    let start = server.url("a.test", "/");
    let run = crawl(&server, &[&start], LIMIT);
    assert_eq!(run.code, 0, "{}", run.stderr);

    let records = pages(server.records());
    assert!(
        duplicates(&records).is_empty(),
        "fetched twice: {:?}",
        duplicates(&records)
    );
    let fetched: BTreeSet<String> = records.iter().map(|r| normalize_path(&r.path)).collect();
    // Everything reachable from the start page, by walking the site's own link graph.
    let origin = start.trim_end_matches('/').to_string();
    let reachable = reachable(&site, &origin, None);
    assert!(
        reachable.len() > 2001,
        "query variants add pages: {}",
        reachable.len()
    );
    assert_eq!(fetched, reachable);
    assert_eq!(
        records.iter().filter(|r| r.path == "/").count(),
        1,
        "the start URL is not fetched again"
    );

    let items = run.items();
    assert_eq!(items.len(), records.len(), "one item per 2xx page");
    let stats = run.stats();
    assert_eq!(
        stats["downloader/request_count"],
        server.records().len() as u64,
        "stats match the server"
    );
    assert_eq!(stats["robotstxt/request_count"], 1);
    assert_eq!(stats["item_scraped_count"], items.len() as u64);
    assert!(stats["dupefilter/filtered"].as_u64().unwrap() > 10_000);
    assert_eq!(stats["finish_reason"], "finished");
}

#[test]
fn depth_limit_fetches_exactly_the_pages_within_it() {
    let site = Site::generated(300).links_per_page(4);
    let server = TestServer::builder()
        .host("a.test", ip(2), site.clone())
        .start()
        .unwrap();
    let start = server.url("a.test", "/");
    let origin = start.trim_end_matches('/').to_string();
    // Shortest link distances from the start page.
    let mut dist = HashMap::from([("/".to_string(), 0u32)]);
    let mut todo = VecDeque::from(["/".to_string()]);
    while let Some(p) = todo.pop_front() {
        let d = dist[&p];
        for href in site.links(&p, &origin) {
            let q = local_path(&href, &origin);
            if !dist.contains_key(&q) {
                dist.insert(q.clone(), d + 1);
                todo.push_back(q);
            }
        }
    }
    let within: BTreeSet<String> = dist
        .iter()
        .filter(|(_, d)| **d <= 3)
        .map(|(p, _)| p.clone())
        .collect();
    assert!(within.len() < dist.len(), "the limit cuts the site");

    // One request at a time, so the crawl is strictly breadth-first and each
    // page's depth is its shortest distance.
    let run = crawl(
        &server,
        &[&start, "-s", "DEPTH_LIMIT=3", "-s", "CONCURRENT_REQUESTS=1"],
        LIMIT,
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let fetched: BTreeSet<String> = pages(server.records())
        .iter()
        .map(|r| normalize_path(&r.path))
        .collect();
    assert_eq!(fetched, within);
    for item in run.items() {
        let path = local_path(item["url"].as_str().unwrap(), &origin);
        assert_eq!(item["depth"], dist[&path], "{path}");
    }
    assert_eq!(run.stats()["request_depth_max"], 3);

    // With concurrency the order is looser, but nothing beyond the limit is fetched.
    server.clear_records();
    let run = crawl(&server, &[&start, "-s", "DEPTH_LIMIT=2"], LIMIT);
    assert_eq!(run.code, 0, "{}", run.stderr);
    for r in pages(server.records()) {
        assert!(
            dist[&normalize_path(&r.path)] <= 2,
            "{} is beyond depth 2",
            r.path
        );
    }
}

#[test]
fn only_allowed_domains_are_followed() {
    // The linked sites' URLs are only known once their server has ports, so the
    // start page lives on a second server built after the first.
    let server = TestServer::builder()
        .host("b.test", ip(3), Site::generated(5))
        .host("sub.a.test", ip(2), Site::generated(3))
        .start()
        .unwrap();
    let b = server.url("b.test", "/");
    let sub = server.url("sub.a.test", "/");
    let hub = TestServer::builder()
        .host(
            "a.test",
            ip(4),
            Site::pages([(
                "/",
                200,
                format!("<a href=\"{b}\">b</a><a href=\"{sub}\">sub</a><a href=\"/x\">x</a>"),
            )]),
        )
        .start()
        .unwrap();
    let start = hub.url("a.test", "/");
    let resolve: Vec<String> = server.resolve_args();
    let mut args = vec![start.as_str()];
    for r in &resolve {
        args.extend(["--resolve", r.as_str()]);
    }
    let run = crawl(&hub, &args, LIMIT);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let hosts: BTreeSet<String> = server.records().iter().map(|r| r.host.clone()).collect();
    assert_eq!(
        hosts,
        BTreeSet::from(["sub.a.test".to_string()]),
        "subdomains allowed, others not"
    );
    let stats = run.stats();
    assert_eq!(stats["offsite/filtered"], 1);
    assert_eq!(
        stats["httperror/response_ignored_count"], 1,
        "the 404 is counted, not fatal"
    );

    server.clear_records();
    args.extend(["--allow-domain", "a.test", "--allow-domain", "b.test"]);
    let run = crawl(&hub, &args, LIMIT);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let b_pages = pages(server.records())
        .iter()
        .filter(|r| r.host == "b.test")
        .count();
    assert_eq!(b_pages, 6, "all of b.test once allowed");
}

#[test]
fn follow_regex_narrows_links() {
    let server = TestServer::builder()
        .host("a.test", ip(2), Site::generated(100))
        .start()
        .unwrap();
    let start = server.url("a.test", "/");
    let run = crawl(&server, &[&start, "--follow", r"/p/[0-9]$"], LIMIT);
    assert_eq!(run.code, 0, "{}", run.stderr);
    for r in pages(server.records()) {
        let p = normalize_path(&r.path);
        assert!(
            p == "/" || (p.starts_with("/p/") && p.len() == 4),
            "{p} should not be followed"
        );
    }
    assert!(server.records().len() > 3);
}

#[test]
fn fields_and_every_output_format() {
    let server = TestServer::builder()
        .host("a.test", ip(2), Site::generated(20))
        .start()
        .unwrap();
    let start = server.url("a.test", "/");
    let fields = [
        "--field",
        "title=title",
        "--field",
        "price=p.price",
        "--field",
        "nothing=h6",
    ];
    let run = crawl(
        &server,
        &[&[start.as_str()][..], &fields[..]].concat(),
        LIMIT,
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let items = run.items();
    assert_eq!(items.len(), 21);
    let p3 = items
        .iter()
        .find(|i| i["url"].as_str().unwrap().ends_with("/p/3"))
        .unwrap();
    assert_eq!(p3["title"], "Page 3");
    assert_eq!(p3["price"], "3.99", "trimmed");
    assert_eq!(p3["nothing"], Value::Null);
    assert_eq!(p3["status"], 200);
    let keys: Vec<&String> = p3.as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        ["url", "status", "depth", "title", "price", "nothing"]
    );

    for name in ["items.json", "items.csv"] {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join(name).display().to_string();
        let run = crawl(
            &server,
            &[&[start.as_str(), "-o", &out][..], &fields[..]].concat(),
            LIMIT,
        );
        assert_eq!(run.code, 0, "{}", run.stderr);
        let text = std::fs::read_to_string(&out).unwrap();
        if name.ends_with(".json") {
            let v: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(v.as_array().unwrap().len(), 21);
        } else {
            let mut r = csv::Reader::from_reader(text.as_bytes());
            assert_eq!(
                r.headers().unwrap().iter().collect::<Vec<_>>(),
                ["url", "status", "depth", "title", "price", "nothing"]
            );
            assert_eq!(r.records().count(), 21);
        }
    }
}

#[test]
fn stats_use_scrapy_names_and_count_what_the_server_saw() {
    let site = Site::generated(30)
        .page("/p/5", 500, "oops")
        .page("/p/6", 404, "gone");
    let server = TestServer::builder()
        .host("a.test", ip(2), site)
        .start()
        .unwrap();
    let start = server.url("a.test", "/");
    let run = crawl(&server, &[&start, "-s", "RETRY_BACKOFF_BASE=0.05"], LIMIT);
    assert_eq!(
        run.code, 0,
        "failed pages are counted, not fatal: {}",
        run.stderr
    );
    let records = server.records();
    let stats = run.stats();
    let count = |status: u16| records.iter().filter(|r| r.status == status).count() as u64;
    assert_eq!(stats["downloader/request_count"], records.len() as u64);
    assert_eq!(stats["downloader/response_count"], records.len() as u64);
    assert_eq!(stats["downloader/response_status_count/200"], count(200));
    assert_eq!(
        stats["downloader/response_status_count/500"], 3,
        "tried 1 + RETRY_TIMES times"
    );
    assert_eq!(stats["retry/count"], 2);
    assert_eq!(stats["retry/max_reached"], 1);
    assert_eq!(
        stats["downloader/response_status_count/404"], 2,
        "/p/6 and /robots.txt"
    );
    assert_eq!(
        stats["httperror/response_ignored_count"], 2,
        "/p/5 and /p/6; robots.txt is not a page"
    );
    assert_eq!(stats["item_scraped_count"], count(200));
    assert!(stats["elapsed_time_seconds"].as_f64().unwrap() > 0.0);
    assert_eq!(stats["finish_reason"], "finished");
    assert_eq!(stats["slots"]["a.test"]["requests"], records.len() as u64);
    assert!(
        run.stderr.contains("downloader/request_count"),
        "summary printed:\n{}",
        run.stderr
    );
}

#[test]
fn closespider_pagecount_stops_the_crawl() {
    let server = TestServer::builder()
        .host("a.test", ip(2), Site::generated(500))
        .start()
        .unwrap();
    let start = server.url("a.test", "/");
    let run = crawl(
        &server,
        &[
            &start,
            "-s",
            "CLOSESPIDER_PAGECOUNT=25",
            "-s",
            "CONCURRENT_REQUESTS_PER_DOMAIN=2",
        ],
        LIMIT,
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let n = pages(server.records()).len() + 1;
    // robots.txt counts as a response, as in Scrapy. Soft, as in Scrapy: requests already in flight still finish.
    assert!((25..=27).contains(&n), "{n} requests");
    assert_eq!(run.stats()["finish_reason"], "closespider_pagecount");
}
