//! DNS through the async resolver, against the broad test bed's DNS server
//! on loopback (`DNS_NAMESERVERS`).

use std::net::Ipv4Addr;

use spindle::{Crawler, Output, Request, Response, Settings, Spider, SpiderError};
use spindle_testsite::broad::{BroadConfig, BroadSite};

struct Fixed(Vec<String>);

impl Spider for Fixed {
    fn start_requests(&self) -> Vec<Request> {
        self.0.iter().map(|u| Request::get(u).unwrap()).collect()
    }
    fn parse(&self, _: &Response) -> Result<Output, SpiderError> {
        Ok(Output::default())
    }
}

#[tokio::test]
async fn names_resolve_through_the_configured_server_and_failures_are_cached() {
    let site = BroadSite::start(BroadConfig {
        hosts: 3,
        pages: 1,
        links: 0,
        hanging: 0,
        hang_every: 1,
        good_ip: Ipv4Addr::new(127, 0, 0, 71).into(),
        hang_ip: Ipv4Addr::new(127, 0, 0, 72).into(),
        dns_ip: Ipv4Addr::new(127, 0, 0, 154).into(),
        record: true,
        latency: std::time::Duration::ZERO,
    })
    .unwrap();
    let port = site
        .url(0, "/")
        .rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches('/')
        .to_string();
    let mut urls: Vec<String> = (0..3).map(|h| site.url(h, "/")).collect();
    // A name that does not exist, asked for by three requests.
    for path in ["a", "b", "c"] {
        urls.push(format!("http://nowhere.example.org:{port}/{path}"));
    }
    let settings = Settings::default()
        .with("DNS_NAMESERVERS", &site.dns_addr().to_string())
        .unwrap()
        .with("RETRY_ENABLED", "false")
        .unwrap()
        .with("CONCURRENT_REQUESTS_PER_DOMAIN", "1")
        .unwrap();
    let report = Crawler::new(Fixed(urls), settings).run().await.unwrap();
    assert_eq!(report.get("response_received_count"), 3);
    assert_eq!(site.records().len(), 3);
    // Counted as a DNS failure, not a connection error, and each not retried.
    assert_eq!(
        report.get("downloader/exception_type_count/DNSLookupError"),
        3
    );
    assert_eq!(
        report.get("downloader/exception_type_count/ConnectError"),
        0
    );
    // 3 good names (A only, as they answer) and the missing one asked for
    // once (A, then AAAA): its NXDOMAIN is cached for the SOA's 300 s.
    assert!(
        site.dns_queries() <= 5,
        "{} DNS queries",
        site.dns_queries()
    );
}
