//! Item pipelines: clean, drop and deduplicate items. The stages are in
//! `stages.rs`; this runs them on the JSON API example's spider.

#[path = "../common/mod.rs"]
mod common;
#[path = "../json_api/spider.rs"]
mod json_api;
mod stages;

use spindle::{Crawler, Settings};

#[tokio::main]
async fn main() {
    let (base, server) = common::base_url();
    let spider = stages::Twice(json_api::ApiSpider { base });
    let crawler = stages::stages(Crawler::new(spider, Settings::default()));
    common::crawl(crawler, server.as_ref()).await;
}
