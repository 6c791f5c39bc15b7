//! The library API: a Rust spider of its own, run in-process against the test server.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use spindle::{Crawler, LinkExtractor, Output, Request, Response, Settings, Spider, SpiderError};
use spindle_testsite::{max_in_flight, start_gaps, Site, TestServer};

const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

/// Follows every link; panics on one page and fails on another when told to.
struct Walker {
    start: Vec<Request>,
    panic_on: Option<&'static str>,
    fail_on: Option<&'static str>,
    slot: Option<&'static str>,
    parsed: Arc<AtomicUsize>,
}

impl Walker {
    fn new(start: &str) -> Self {
        Walker {
            start: vec![Request::get(start).unwrap()],
            panic_on: None,
            fail_on: None,
            slot: None,
            parsed: Arc::default(),
        }
    }
}

impl Spider for Walker {
    fn start_requests(&self) -> Vec<Request> {
        self.start.clone()
    }

    fn parse(&self, response: &Response) -> Result<Output, SpiderError> {
        if Some(response.url.path()) == self.panic_on {
            panic!("boom on {}", response.url);
        }
        if Some(response.url.path()) == self.fail_on {
            return Err("cannot parse".into());
        }
        self.parsed.fetch_add(1, Ordering::SeqCst);
        let page = LinkExtractor::new().extract(&response.body, &response.url, None);
        let requests = page
            .links
            .into_iter()
            .map(|u| {
                let r = Request::new(u);
                match self.slot {
                    Some(s) => r.with_slot(s),
                    None => r,
                }
            })
            .collect();
        Ok(Output {
            requests,
            ..Output::default()
        })
    }
}

async fn run(server: &TestServer, spider: Walker, settings: Settings) -> spindle::CrawlReport {
    let mut crawler = Crawler::new(spider, settings);
    for host in server.hosts() {
        crawler = crawler.resolve(&host, server.addr_of(&host).ip());
    }
    tokio::time::timeout(Duration::from_secs(60), crawler.run())
        .await
        .expect("crawl finished in time")
        .expect("crawl ran")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_or_failing_parse_costs_one_page() {
    let server = TestServer::builder()
        .host("a.test", LOCAL, Site::generated(50))
        .start()
        .unwrap();
    let mut spider = Walker::new(&server.url("a.test", "/"));
    spider.panic_on = Some("/p/10");
    spider.fail_on = Some("/p/20");
    let parsed = spider.parsed.clone();
    let report = run(&server, spider, Settings::default()).await;
    assert_eq!(report.get("spider_exceptions/count"), 2);
    assert_eq!(report.finish_reason, "finished");
    // Every page reachable without the two failed pages' links was still crawled.
    assert!(
        parsed.load(Ordering::SeqCst) >= 40,
        "{}",
        parsed.load(Ordering::SeqCst)
    );
    assert_eq!(
        report.get("downloader/request_count"),
        server.records().len() as u64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_slot_joins_hosts_under_one_cap() {
    let site = || Site::generated(100).latency(Duration::from_millis(100));
    let server = TestServer::builder()
        .host("a.test", LOCAL, site())
        .host("b.test", Ipv4Addr::new(127, 0, 0, 3), site())
        .start()
        .unwrap();
    let mut spider = Walker::new(&server.url("a.test", "/"));
    spider.start.push(
        Request::get(&server.url("b.test", "/"))
            .unwrap()
            .with_slot("shared"),
    );
    spider.start[0].slot = Some("shared".into());
    spider.slot = Some("shared");
    let mut settings = Settings::default();
    settings.set("CONCURRENT_REQUESTS_PER_DOMAIN", "3").unwrap();
    settings.set("CLOSESPIDER_PAGECOUNT", "40").unwrap();
    let report = run(&server, spider, settings).await;
    assert_eq!(max_in_flight(&server.records()), 3);
    assert_eq!(report.slots.keys().collect::<Vec<_>>(), ["shared"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn download_slots_override_delay_for_one_site() {
    let server = TestServer::builder()
        .host("a.test", LOCAL, Site::generated(100))
        .host("b.test", Ipv4Addr::new(127, 0, 0, 3), Site::generated(100))
        .start()
        .unwrap();
    let mut spider = Walker::new(&server.url("a.test", "/"));
    spider
        .start
        .push(Request::get(&server.url("b.test", "/")).unwrap());
    let mut settings = Settings::default();
    settings
        .set(
            "DOWNLOAD_SLOTS",
            r#"{"a.test": {"delay": 0.15, "randomize_delay": false}}"#,
        )
        .unwrap();
    settings.set("CLOSESPIDER_TIMEOUT", "1.5").unwrap();
    let report = run(&server, spider, settings).await;
    let records = server.records();
    let a: Vec<_> = records
        .iter()
        .filter(|r| r.host == "a.test")
        .cloned()
        .collect();
    let b = records.len() - a.len();
    let min_a = start_gaps(&a).into_iter().min().unwrap();
    assert!(min_a >= Duration::from_millis(140), "a.test gap {min_a:?}");
    assert!(a.len() <= 12, "a.test is delayed: {} requests", a.len());
    assert_eq!(b, 101, "b.test is not: all of it in the same time");
    assert_eq!(report.finish_reason, "closespider_timeout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_go_through_the_scheduler_and_are_deduplicated() {
    let site = Site::pages([
        (
            "/",
            200,
            r#"<a href="/old">o</a><a href="/old2">o2</a><a href="/loop1">l</a>"#,
        ),
        ("/new", 200, "new"),
    ])
    .redirect("/old", 301, "/new")
    .redirect("/old2", 302, "/new")
    .redirect("/loop1", 302, "/loop2")
    .redirect("/loop2", 302, "/loop1");
    let server = TestServer::builder()
        .host("a.test", LOCAL, site)
        .start()
        .unwrap();
    let report = run(
        &server,
        Walker::new(&server.url("a.test", "/")),
        Settings::default(),
    )
    .await;
    let paths: Vec<String> = server.records().iter().map(|r| r.path.clone()).collect();
    assert_eq!(
        paths.iter().filter(|p| *p == "/new").count(),
        1,
        "{paths:?}"
    );
    assert_eq!(
        paths.iter().filter(|p| p.starts_with("/loop")).count(),
        2,
        "a loop ends at the dedup filter"
    );
    assert_eq!(report.get("downloader/response_status_count/301"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_requests_in_flight() {
    let server = TestServer::builder()
        .host(
            "a.test",
            LOCAL,
            Site::generated(500).latency(Duration::from_millis(300)),
        )
        .start()
        .unwrap();
    let crawler = Crawler::new(Walker::new(&server.url("a.test", "/")), Settings::default())
        .resolve("a.test", LOCAL);
    let stop = crawler.shutdown_handle();
    let task = tokio::spawn(crawler.run());
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop.shutdown();
    let report = tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(report.finish_reason, "shutdown");
    let records = server.records();
    assert!(
        records.iter().all(|r| r.status == 200),
        "in-flight requests finished, none abandoned"
    );
    assert_eq!(
        report.get("downloader/response_count"),
        records.len() as u64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirect_chains_stop_at_the_limit_and_only_http_is_followed() {
    let mut site = Site::pages([(
        "/",
        200,
        r#"<a href="/hop/0">chain</a><a href="/to-ftp">ftp</a>"#.to_string(),
    )])
    .redirect("/to-ftp", 302, "ftp://a.test/file");
    for i in 0..30 {
        site = site.redirect(format!("/hop/{i}"), 302, format!("/hop/{}", i + 1));
    }
    let server = TestServer::builder()
        .host("a.test", LOCAL, site)
        .start()
        .unwrap();
    let mut settings = Settings::default();
    settings.set("REDIRECT_MAX_TIMES", "5").unwrap();
    let report = run(&server, Walker::new(&server.url("a.test", "/")), settings).await;
    let hops = server
        .records()
        .iter()
        .filter(|r| r.path.starts_with("/hop/"))
        .count();
    assert_eq!(hops, 6, "the first request and 5 redirects");
    assert_eq!(report.get("redirect/max_reached"), 1);
    assert_eq!(report.get("redirect/unsupported_scheme"), 1);
}

/// CLOSESPIDER_ERRORCOUNT counts spider errors, as Scrapy's does, and closes the crawl.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closespider_errorcount_stops_after_spider_errors() {
    let server = TestServer::builder()
        .host("a.test", LOCAL, Site::generated(3000).links_per_page(3))
        .start()
        .unwrap();
    let mut spider = Walker::new(&server.url("a.test", "/"));
    spider.fail_on = Some("/p/0");
    let settings = Settings::default()
        .with("CLOSESPIDER_ERRORCOUNT", "1")
        .unwrap()
        .with("CONCURRENT_REQUESTS_PER_DOMAIN", "1")
        .unwrap();
    let report = run(&server, spider, settings).await;
    assert_eq!(report.finish_reason, "closespider_errorcount");
    assert_eq!(report.get("spider_exceptions/count"), 1);
    assert!(report.get("response_received_count") < 100, "stopped early");
}
