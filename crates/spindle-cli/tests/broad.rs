//! Broad crawls: many hosts behind a wildcard DNS served on loopback (the
//! crawler is pointed at it with `DNS_NAMESERVERS`), judged from the
//! server's records.

mod common;

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use common::{crawl_with, crawl_with_nofile, Run};
use serde_json::Value;
use spindle_testsite::broad::{BroadConfig, BroadSite};

fn site(hosts: usize, hanging: usize, hang_every: usize) -> BroadSite {
    BroadSite::start(BroadConfig {
        hosts,
        pages: 2,
        links: 3,
        hanging,
        hang_every,
        good_ip: Ipv4Addr::new(127, 0, 0, 61).into(),
        hang_ip: Ipv4Addr::new(127, 0, 0, 62).into(),
        dns_ip: Ipv4Addr::new(127, 0, 0, 153).into(),
        record: true,
        latency: std::time::Duration::ZERO,
    })
    .unwrap()
}

fn stat(stats: &Value, key: &str) -> u64 {
    stats[key].as_u64().unwrap_or(0)
}

/// Crawls the site from `h0` under `nofile` descriptors (0: as they are),
/// with the site's DNS and these extra arguments.
fn crawl_site(site: &BroadSite, extra: &[&str], limit: Duration, nofile: u64) -> Run {
    let dns = format!("DNS_NAMESERVERS={}", site.dns_addr());
    let start = site.url(0, "/");
    let mut args = vec![
        start.as_str(),
        "--allow-domain",
        "broad.test",
        "-s",
        &dns,
        "-s",
        "LOGSTATS_INTERVAL=0",
    ];
    args.extend(extra);
    match nofile {
        0 => crawl_with(&[], &args, limit),
        n => crawl_with_nofile(&[], &args, limit, n),
    }
}

/// Every good page fetched exactly once.
fn assert_all_good_pages_once(site: &BroadSite) {
    let mut seen: HashMap<(String, String), usize> = HashMap::new();
    for r in site.records() {
        *seen.entry(r).or_default() += 1;
    }
    let mut missing = Vec::new();
    for page in site.good_pages() {
        match seen.get(&page) {
            Some(1) => {}
            Some(n) => panic!("{page:?} fetched {n} times"),
            None => missing.push(page),
        }
    }
    assert!(
        missing.is_empty(),
        "{} good pages never fetched, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
}

#[test]
fn every_host_is_crawled_under_a_low_descriptor_limit() {
    // 1,500 hosts, each with robots.txt and 2 pages, and up to 1,500 requests
    // at once under a limit of 256 descriptors (1,024 is never reached at this
    // size): connects and lookups run out
    // of descriptors, wait and go again; nothing is lost or blamed on a site.
    let site = site(1500, 0, 1);
    let run = crawl_site(
        &site,
        &[
            "-s",
            "CONCURRENT_REQUESTS=1500",
            "-s",
            "CONCURRENT_REQUESTS_PER_DOMAIN=2",
            "-s",
            "DOWNLOAD_TIMEOUT=30",
        ],
        Duration::from_secs(120),
        256,
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let stats = run.stats();
    eprintln!(
        "fd waits {}, elapsed {:?}, peak RSS {} KiB, {} connections\n{}",
        stat(&stats, "downloader/fd_wait_count"),
        run.elapsed,
        run.peak_rss_kib,
        site.good_connections(),
        run.stderr
            .lines()
            .filter(|l| !l.contains("broad.test:") || l.contains("DNS"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(stats["finish_reason"], "finished");
    for key in [
        "downloader/exception_count",
        "downloader/fd_gave_up_count",
        "robotstxt/unreachable",
        "robotstxt/forbidden",
        "slot/given_up_count",
        "slot/given_up_requests",
    ] {
        assert_eq!(stat(&stats, key), 0, "{key}: {stats:#}");
    }
    assert_all_good_pages_once(&site);
    assert!(
        stat(&stats, "downloader/fd_wait_count") > 0,
        "the limit was never reached, so this tested nothing"
    );
    assert_eq!(stat(&stats, "robotstxt/response_count"), 1500);
    // Stats stay small: the top slots and one line for the rest.
    let listed = stats["slots"].as_object().unwrap().len();
    assert!(listed <= 30, "{listed} slots listed");
    assert_eq!(
        stats["other_slots"]["slots"].as_u64().unwrap() as usize + listed,
        1500
    );
}

#[test]
fn hanging_hosts_are_given_up_and_good_hosts_crawled() {
    // 10 hosts that accept and never answer among 300 good ones, with only 8
    // requests at once: the hanging ones are cut to one request, given up
    // after 3 failures, and while they wait they do not hold global places.
    let site = site(300, 10, 30);
    let run = crawl_site(
        &site,
        &[
            "-s",
            "CONCURRENT_REQUESTS=8",
            "-s",
            "DOWNLOAD_TIMEOUT=2",
            "-s",
            "DOWNLOAD_SLOW_AFTER=0.5",
            "-s",
            "SLOT_MAX_EXCEPTIONS=3",
            "-s",
            "ROBOTSTXT_OBEY=false",
            "-s",
            "RETRY_BACKOFF_BASE=0.1",
        ],
        Duration::from_secs(90),
        0,
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let stats = run.stats();
    eprintln!(
        "elapsed {:?}, hanging connections {}",
        run.elapsed,
        site.hang_connections()
    );
    assert_all_good_pages_once(&site);
    assert_eq!(site.linked_hanging_hosts(), 10);
    assert_eq!(stat(&stats, "slot/given_up_count"), 10, "{stats:#}");
    // Each hanging host's 3 pages: tried, then dropped with the slot.
    assert_eq!(stat(&stats, "slot/given_up_requests"), 30, "{stats:#}");
    assert_eq!(
        stat(&stats, "downloader/exception_type_count/TimeoutError"),
        30
    );
    assert!(site.hang_connections() <= 30, "{}", site.hang_connections());
    assert_eq!(stats["finish_reason"], "finished");
    assert!(
        run.elapsed < Duration::from_secs(30),
        "took {:?}",
        run.elapsed
    );
}
