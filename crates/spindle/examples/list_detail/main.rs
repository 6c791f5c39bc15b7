//! A list → detail crawl that carries data from each list page to its detail
//! pages. The spider is in `spider.rs`; this runs it.
//!
//! ```text
//! cargo run -p spindle --example list_detail         # crawls a demo shop it serves itself
//! ```

#[path = "../common/mod.rs"]
mod common;
mod spider;

use spider::ListDetailSpider;
use spindle::{Crawler, Settings};

#[tokio::main]
async fn main() {
    let (base, server) = common::base_url();
    let spider = ListDetailSpider { base };
    common::crawl(Crawler::new(spider, Settings::default()), server.as_ref()).await;
}
