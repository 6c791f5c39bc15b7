//! Log in with a form POST, keep the session cookie, then crawl the pages
//! only members see. The spider is in `spider.rs`; this runs it.
//!
//! ```text
//! cargo run -p spindle --example login               # crawls a demo shop it serves itself
//! cargo run -p spindle --example login -- http://127.0.0.1:8000
//! ```

#[path = "../common/mod.rs"]
mod common;
mod spider;

use spider::LoginSpider;
use spindle::{Crawler, Settings};

#[tokio::main]
async fn main() {
    let (base, server) = common::base_url();
    let spider = LoginSpider {
        base,
        user: "alice".into(),
        password: "secret".into(),
    };
    common::crawl(Crawler::new(spider, Settings::default()), server.as_ref()).await;
}
