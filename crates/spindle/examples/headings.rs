//! A spider of your own: crawl a site, keep each page's title and `h1`, and
//! follow links only into `/p/` pages. Run it against any site:
//!
//! ```text
//! cargo run -p spindle --example headings -- http://localhost:8000/
//! ```

use serde_json::Value;
use spindle::exporter::{self, Format};
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
        let requests = page
            .links
            .into_iter()
            .filter(|u| u.path().starts_with("/p/") || u.path() == "/")
            .map(Request::new)
            .collect();
        Ok(Output {
            items: vec![item],
            requests,
            ..Output::default()
        })
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "http://localhost:8000/".into());
    let spider = Headings {
        start: Request::get(&url)?,
        extractor: LinkExtractor::new()
            .with_field("title", "title")?
            .with_field("h1", "h1")?,
    };
    let mut settings = Settings::default();
    settings.set("DOWNLOAD_DELAY", "0.1")?;
    settings.set("CLOSESPIDER_PAGECOUNT", "50")?;
    let out = exporter::open("headings.jsonl".as_ref(), Format::JsonLines, None)?;
    let report = Crawler::new(spider, settings).exporter(out).run().await?;
    eprint!("{}", report.summary());
    Ok(())
}
