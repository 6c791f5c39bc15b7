//! A spider of your own: crawl a site, keep each page's title and `h1`, and
//! follow every link within the start URL's host (at most 50 pages, 0.1 s apart).
//! Items go to stdout as JSON lines, the stats to stderr. With no URL it crawls a
//! demo shop it serves on 127.0.0.1; give any http(s) URL to crawl that instead:
//!
//! ```text
//! cargo run -p spindle --example headings
//! cargo run -p spindle --example headings -- https://docs.python.org/3/ > headings.jsonl
//! ```
//!
//! It exits with status 1 when no page could be fetched.

#[path = "common/mod.rs"]
mod common;

use serde_json::Value;
use spindle::{
    Crawler, Item, LinkExtractor, Output, Request, Response, Settings, Spider, SpiderError,
};

struct Headings {
    start: Request,
    extractor: LinkExtractor,
}

impl Spider for Headings {
    fn name(&self) -> &str {
        "headings"
    }

    fn start_requests(&self) -> Vec<Request> {
        vec![self.start.clone()]
    }

    fn allowed_domains(&self) -> Vec<String> {
        self.start
            .url
            .host_str()
            .into_iter()
            .map(String::from)
            .collect()
    }

    fn parse(&self, response: &Response) -> Result<Output, SpiderError> {
        let page =
            self.extractor
                .extract(&response.body, &response.url, response.charset().as_deref());
        let mut item = Item::new();
        item.insert("url".into(), response.url.as_str().into());
        for (name, text) in page.fields {
            item.insert(name, text.map_or(Value::Null, Value::String));
        }
        let requests = page.links.into_iter().map(Request::new).collect();
        Ok(Output {
            items: vec![item],
            requests,
            ..Output::default()
        })
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let given = std::env::args().nth(1);
    let (base, server) = common::base_url();
    let url = given.unwrap_or(format!("{base}/"));
    let spider = Headings {
        start: Request::get(&url)?,
        extractor: LinkExtractor::new()
            .with_field("title", "title")?
            .with_field("h1", "h1")?,
    };
    let mut settings = Settings::default();
    settings.set("DOWNLOAD_DELAY", "0.1")?;
    settings.set("CLOSESPIDER_PAGECOUNT", "50")?;
    let report = common::crawl(Crawler::new(spider, settings), server.as_ref()).await;
    if report.get("response_received_count") == 0 {
        eprintln!("error: no page of {url} could be fetched");
        std::process::exit(1);
    }
    Ok(())
}
