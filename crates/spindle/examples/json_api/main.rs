//! A JSON API crawled with POST bodies and pagination. The spider is in
//! `spider.rs`; this runs it.
//!
//! ```text
//! cargo run -p spindle --example json_api            # crawls a demo shop it serves itself
//! ```

#[path = "../common/mod.rs"]
mod common;
mod spider;

use spider::ApiSpider;
use spindle::{Crawler, Settings};

#[tokio::main]
async fn main() {
    let (base, server) = common::base_url();
    common::crawl(
        Crawler::new(ApiSpider { base }, Settings::default()),
        server.as_ref(),
    )
    .await;
}
