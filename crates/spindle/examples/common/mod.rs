//! What the examples share: a base URL from the command line, or else the
//! test site's shop served on 127.0.0.1, so every example runs as written.

use std::net::Ipv4Addr;

use spindle::{CrawlReport, Crawler};
use spindle_testsite::{Shop, TestServer};

/// The shop's base URL (given as the first argument, or served here), and the
/// server when it is ours: keep it alive for the crawl.
pub fn base_url() -> (String, Option<TestServer>) {
    if let Some(url) = std::env::args().nth(1) {
        return (url.trim_end_matches('/').to_string(), None);
    }
    let shop = Shop {
        products: 23,
        members: 4,
    };
    let server = TestServer::builder()
        .host("shop.test", Ipv4Addr::LOCALHOST, shop.site())
        .start()
        .expect("start the demo shop on 127.0.0.1");
    let base = server.url("shop.test", "");
    eprintln!("no URL given: crawling a demo shop served at {base}");
    (base, Some(server))
}

/// Runs the crawl, printing each item as a JSON line and the stats at the end.
pub async fn crawl(crawler: Crawler, server: Option<&TestServer>) -> CrawlReport {
    let mut crawler = crawler.exporter(spindle::exporter::stdout_json_lines());
    if let Some(server) = server {
        for host in server.hosts() {
            crawler = crawler.resolve(&host, server.addr_of(&host).ip());
        }
    }
    let report = crawler.run().await.expect("the crawl runs");
    eprint!("{}", report.summary());
    report
}
