//! The request model, judged from the test server's records: methods,
//! bodies, headers, cookies, data carried to the response, the duplicate
//! filter on method and body, and item pipelines. The spiders are the
//! crate's examples, run here against the test site's shop.

#[path = "../examples/json_api/spider.rs"]
mod json_api;
#[path = "../examples/list_detail/spider.rs"]
mod list_detail;
#[path = "../examples/login/spider.rs"]
mod login;
#[path = "../examples/pipeline/stages.rs"]
mod pipeline;

use std::net::Ipv4Addr;
use std::time::Duration;

use serde_json::Value;
use spindle::{
    CrawlReport, Crawler, Item, Output, Request, Response, Settings, Spider, SpiderError,
};
use spindle_testsite::{Record, Shop, TestServer};

const SHOP: Shop = Shop {
    products: 23,
    members: 4,
};

fn shop() -> TestServer {
    TestServer::builder()
        .host("shop.test", Ipv4Addr::new(127, 0, 0, 31), SHOP.site())
        .start()
        .unwrap()
}

/// Runs a crawl against the server, collecting the items it exports.
async fn crawl(server: &TestServer, crawler: Crawler) -> (CrawlReport, Vec<Item>) {
    let (exporter, items) = collect_items();
    let mut crawler = crawler.exporter(exporter);
    for host in server.hosts() {
        crawler = crawler.resolve(&host, server.addr_of(&host).ip());
    }
    let report = tokio::time::timeout(Duration::from_secs(60), crawler.run())
        .await
        .expect("the crawl ends in time")
        .expect("the crawl runs");
    let items = items.lock().unwrap().clone();
    (report, items)
}

type Shared = std::sync::Arc<std::sync::Mutex<Vec<Item>>>;

fn collect_items() -> (Box<dyn spindle::exporter::ItemExporter>, Shared) {
    struct Collect(Shared);
    impl spindle::exporter::ItemExporter for Collect {
        fn export(&mut self, item: &Item) -> std::io::Result<()> {
            self.0.lock().unwrap().push(item.clone());
            Ok(())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let shared = Shared::default();
    (Box::new(Collect(shared.clone())), shared)
}

fn base(server: &TestServer) -> String {
    server.url("shop.test", "")
}

fn requests_to<'a>(records: &'a [Record], method: &str, prefix: &str) -> Vec<&'a Record> {
    records
        .iter()
        .filter(|r| r.method == method && r.path.starts_with(prefix))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_posts_the_form_and_the_session_cookie_reaches_member_pages() {
    let server = shop();
    let spider = login::LoginSpider {
        base: base(&server),
        user: "alice".into(),
        password: "secret".into(),
    };
    let (report, items) = crawl(&server, Crawler::new(spider, Settings::default())).await;
    let records = server.records();

    let posts = requests_to(&records, "POST", "/login");
    assert_eq!(posts.len(), 1, "{records:#?}");
    assert_eq!(posts[0].body, b"user=alice&password=secret");
    assert_eq!(
        posts[0].header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    assert_eq!(posts[0].status, 302);
    // The 302 after the POST became a GET of /account, with the cookie the 302 set.
    let account = requests_to(&records, "GET", "/account");
    assert_eq!(account.len(), 1);
    assert!(account[0].body.is_empty());
    let members = requests_to(&records, "GET", "/members/");
    assert_eq!(members.len(), SHOP.members);
    for r in members.iter().chain(&account) {
        let cookie = r.header("cookie").unwrap_or_default();
        assert!(cookie.contains("session=s3cr3t-session"), "{r:?}");
        assert_eq!(r.status, 200, "{r:?}");
    }
    assert_eq!(items.len(), SHOP.members);
    assert!(items
        .iter()
        .all(|i| i["title"].as_str().unwrap().starts_with("Member ")));
    assert_eq!(report.get("downloader/request_method_count/POST"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_cookies_the_session_is_not_sent() {
    let server = shop();
    let spider = login::LoginSpider {
        base: base(&server),
        user: "alice".into(),
        password: "secret".into(),
    };
    let mut settings = Settings::default();
    settings.set("COOKIES_ENABLED", "false").unwrap();
    let (_, items) = crawl(&server, Crawler::new(spider, settings)).await;
    let records = server.records();
    assert!(records.iter().all(|r| r.header("cookie").is_none()));
    // /account redirects back to /login, which the duplicate filter has seen.
    assert_eq!(requests_to(&records, "GET", "/account").len(), 1);
    assert!(requests_to(&records, "GET", "/members/").is_empty());
    assert!(items.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_travels_from_the_list_page_to_each_detail_page() {
    let server = shop();
    let spider = list_detail::ListDetailSpider {
        base: base(&server),
    };
    let (_, items) = crawl(&server, Crawler::new(spider, Settings::default())).await;
    assert_eq!(items.len(), SHOP.products);
    for item in &items {
        let url = item["url"].as_str().unwrap();
        let i: u64 = url.rsplit('/').next().unwrap().parse().unwrap();
        assert_eq!(item["name"], format!("Product {i}"));
        assert_eq!(item["price"], format!("{i}.50"));
        assert_eq!(item["list_page"], i / 5 + 1, "{item:?}");
        assert_eq!(item["position"], i % 5, "{item:?}");
    }
    let records = server.records();
    assert_eq!(
        requests_to(&records, "GET", "/list").len(),
        SHOP.list_pages()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_posts_with_different_bodies_are_all_sent() {
    let server = shop();
    let spider = json_api::ApiSpider {
        base: base(&server),
    };
    let (_, items) = crawl(&server, Crawler::new(spider, Settings::default())).await;
    let records = server.records();
    let posts = requests_to(&records, "POST", "/api/products");
    let mut bodies: Vec<Value> = posts
        .iter()
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect();
    bodies.sort_by_key(|b| b["page"].as_u64());
    let expected: Vec<Value> = (1..=SHOP.list_pages())
        .map(|n| serde_json::json!({ "page": n }))
        .collect();
    assert_eq!(bodies, expected);
    for r in &posts {
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(r.header("x-api-client"), Some("spindle-example"));
        assert_eq!(r.status, 200);
    }
    assert_eq!(items.len(), SHOP.products);
}

/// Sends the same POST twice, and once more with `dont_filter`.
struct SamePostTwice {
    url: String,
    again_unfiltered: bool,
}

impl Spider for SamePostTwice {
    fn start_requests(&self) -> Vec<Request> {
        let post = Request::json(&self.url, &serde_json::json!({"page": 1})).unwrap();
        let mut out = vec![post.clone(), post.clone()];
        if self.again_unfiltered {
            out.push(post.dont_filter());
        }
        out
    }

    fn parse(&self, _: &Response) -> Result<Output, SpiderError> {
        Ok(Output::default())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_post_twice_is_sent_once_unless_told_otherwise() {
    for again_unfiltered in [false, true] {
        let server = shop();
        let spider = SamePostTwice {
            url: server.url("shop.test", "/api/products"),
            again_unfiltered,
        };
        let (report, _) = crawl(&server, Crawler::new(spider, Settings::default())).await;
        let posts = requests_to(&server.records(), "POST", "/api/products").len();
        assert_eq!(posts, 1 + usize::from(again_unfiltered));
        assert_eq!(report.get("dupefilter/filtered"), 1);
    }
}

/// One GET with a header of its own.
struct OneGet(String);

impl Spider for OneGet {
    fn start_requests(&self) -> Vec<Request> {
        vec![Request::get(&self.0)
            .unwrap()
            .with_header("X-Mine", "request")
            .unwrap()
            .with_header("Accept-Language", "de")
            .unwrap()]
    }

    fn parse(&self, _: &Response) -> Result<Output, SpiderError> {
        Ok(Output::default())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_headers_arrive_and_the_request_own_win() {
    let server = shop();
    let mut settings = Settings::default();
    settings
        .set(
            "DEFAULT_REQUEST_HEADERS",
            r#"{"Accept-Language": "fr", "X-Team": "crawl"}"#,
        )
        .unwrap();
    let spider = OneGet(server.url("shop.test", "/login"));
    crawl(&server, Crawler::new(spider, settings)).await;
    let records = server.records();
    assert_eq!(records.len(), 1);
    let r = &records[0];
    assert_eq!(r.header("x-team"), Some("crawl"));
    assert_eq!(r.header("x-mine"), Some("request"));
    assert_eq!(
        r.header("accept-language"),
        Some("de"),
        "the request's own header wins"
    );
    assert!(r.header("user-agent").unwrap().starts_with("spindle/"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelines_transform_and_drop_items_with_counted_reasons() {
    let server = shop();
    let spider = pipeline::Twice(json_api::ApiSpider {
        base: base(&server),
    });
    let crawler = pipeline::stages(Crawler::new(spider, Settings::default()));
    let (report, items) = crawl(&server, crawler).await;
    let even = SHOP.products.div_ceil(2) as u64;
    let odd = SHOP.products as u64 - even;
    assert_eq!(items.len() as u64, even);
    assert!(items.iter().all(|i| i["id"].as_u64().unwrap() % 2 == 0));
    assert!(items
        .iter()
        .all(|i| i["slug"].as_str().unwrap().starts_with("product-")));
    assert_eq!(report.get("item_scraped_count"), even);
    assert_eq!(report.get("item_dropped_reasons_count/odd id"), 2 * odd);
    assert_eq!(report.get("item_dropped_reasons_count/duplicate id"), even);
    assert_eq!(report.get("item_dropped_count"), 2 * odd + even);
}
