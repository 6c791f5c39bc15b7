//! A JSON API crawled with POST bodies and pagination, as Scrapy's
//! `JsonRequest` does it.
//!
//! ```text
//! cargo run -p spindle --example json_api            # crawls a demo shop it serves itself
//! cargo run -p spindle --example json_api -- http://127.0.0.1:8000
//! ```
//!
//! Each page is a POST of `{"page": n}` to the same URL. The duplicate filter
//! fingerprints method, URL and body, so these are different requests, while
//! the same POST twice would be sent once.

use serde::Deserialize;
use spindle::{Output, Request, Response, Spider, SpiderError};

#[derive(Deserialize)]
struct Page {
    products: Vec<serde_json::Map<String, serde_json::Value>>,
    next_page: Option<u32>,
}

/// Pages through `POST /api/products` until `next_page` is null.
pub struct ApiSpider {
    /// The site's base URL, without a trailing slash.
    pub base: String,
}

impl ApiSpider {
    fn page(&self, n: u32) -> Request {
        let url = format!("{}/api/products", self.base);
        Request::json(&url, &serde_json::json!({ "page": n }))
            .expect("a base URL checked at start")
            .with_header("X-Api-Client", "spindle-example")
            .expect("a valid header")
    }
}

impl Spider for ApiSpider {
    fn name(&self) -> &str {
        "json_api"
    }

    fn start_requests(&self) -> Vec<Request> {
        vec![self.page(1)]
    }

    fn parse(&self, response: &Response) -> Result<Output, SpiderError> {
        let page: Page = response.json()?;
        let mut out = Output::default();
        out.items.extend(page.products);
        if let Some(next) = page.next_page {
            out.requests.push(self.page(next));
        }
        Ok(out)
    }
}
