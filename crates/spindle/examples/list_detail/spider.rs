//! A list → detail crawl that carries data from the list page to each detail
//! page, as Scrapy's `cb_kwargs` (or Crawlee's `userData`) do.
//!
//! ```text
//! cargo run -p spindle --example list_detail         # crawls a demo shop it serves itself
//! cargo run -p spindle --example list_detail -- http://127.0.0.1:8000
//! ```
//!
//! The data travels inside the request, serialized whole, so it also reaches
//! worker processes and would survive a persistent frontier.

use serde::{Deserialize, Serialize};
use spindle::{LinkExtractor, Output, Request, Response, Selector, Spider, SpiderError};

/// What a list page knows about a product, handed to its detail page.
#[derive(Serialize, Deserialize)]
pub struct Listing {
    /// The list page it was found on (from 1).
    pub list_page: u32,
    /// Its position on that page (from 0).
    pub position: u32,
}

/// One product, from its detail page plus what its list page said.
#[derive(Serialize)]
pub struct Product {
    /// The detail page's URL.
    pub url: String,
    /// The product's name.
    pub name: Option<String>,
    /// Its price, as shown.
    pub price: Option<String>,
    /// The list page it was found on.
    pub list_page: u32,
    /// Its position on that page.
    pub position: u32,
}

/// Walks `/list?page=N` and visits every product it lists.
pub struct ListDetailSpider {
    /// The site's base URL, without a trailing slash.
    pub base: String,
}

impl Spider for ListDetailSpider {
    fn name(&self) -> &str {
        "list_detail"
    }

    fn start_requests(&self) -> Vec<Request> {
        let first = format!("{}/list?page=1", self.base);
        vec![Request::get(&first)
            .unwrap()
            .with_callback("list")
            .with_data(1u32)]
    }

    fn parse(&self, response: &Response) -> Result<Output, SpiderError> {
        let mut out = Output::default();
        match response.callback() {
            Some("list") => {
                let list_page: u32 = response.data()?;
                let links = LinkExtractor::new()
                    .extract(&response.body, &response.url, None)
                    .links;
                let products = links.iter().filter(|u| u.path().starts_with("/product/"));
                for (position, url) in products.enumerate() {
                    out.requests
                        .push(Request::new(url.clone()).with_callback("detail").with_data(
                            Listing {
                                list_page,
                                position: position as u32,
                            },
                        ));
                }
                if let Some(next) = links.iter().find(|u| u.path() == "/list") {
                    out.requests.push(
                        Request::new(next.clone())
                            .with_callback("list")
                            .with_data(list_page + 1),
                    );
                }
            }
            Some("detail") => {
                let listing: Listing = response.data()?;
                // Parse once, select twice (parsel's `::text`, as in Scrapy).
                let page = response.selector();
                let name = Selector::css("h1.name::text")?.get(&page);
                let price = Selector::css(".price::text")?.get(&page);
                out.add_item(&Product {
                    url: response.url.to_string(),
                    name,
                    price,
                    list_page: listing.list_page,
                    position: listing.position,
                })?;
            }
            other => return Err(format!("no parse step for label {other:?}").into()),
        }
        Ok(out)
    }
}
