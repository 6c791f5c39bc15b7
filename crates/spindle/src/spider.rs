//! The `Spider` trait: what a crawl starts from and what it makes of each page.

use crate::item::Item;
use crate::request::Request;
use crate::response::Response;

/// An error a spider returns from `parse`; counted, logged, and the crawl goes on.
pub type SpiderError = Box<dyn std::error::Error + Send + Sync>;

/// What a spider makes of one response: items to export and requests to follow.
#[derive(Debug, Default)]
pub struct Output {
    /// Items to pass to the item pipelines and the exporter.
    pub items: Vec<Item>,
    /// Requests to schedule (depth, offsite and duplicate checks apply).
    pub requests: Vec<Request>,
    /// Counters to add to the crawl's stats, e.g. `("linkextractor/skipped_links", 3)`.
    pub stats: Vec<(&'static str, u64)>,
}

impl Output {
    /// Adds a typed item: any serde value that serializes to a JSON object
    /// (a struct with named fields, or a map).
    pub fn add_item(&mut self, item: &impl serde::Serialize) -> Result<(), SpiderError> {
        match serde_json::to_value(item)? {
            serde_json::Value::Object(map) => {
                self.items.push(map);
                Ok(())
            }
            other => Err(format!("an item must serialize to a JSON object, not {other}").into()),
        }
    }
}

/// A spider: start requests, and a parse step for every 2xx response.
///
/// `parse` runs on the engine's parse threads, never on the I/O threads, so it
/// may take CPU time without stalling downloads. Requests it returns are given
/// depth `response.depth() + 1`, checked against `allowed_domains`, the depth
/// limit and the duplicate filter by the engine.
pub trait Spider: Send + Sync + 'static {
    /// The spider's name, for logs.
    fn name(&self) -> &str {
        "spider"
    }

    /// The requests the crawl starts from.
    fn start_requests(&self) -> Vec<Request>;

    /// Domains whose hosts (the domain itself and its subdomains) requests may
    /// go to; empty allows every host. Start requests are never filtered.
    fn allowed_domains(&self) -> Vec<String> {
        Vec::new()
    }

    /// Turns a 2xx response into items and requests. Route on
    /// [`Response::callback`] when requests carry labels.
    fn parse(&self, response: &Response) -> Result<Output, SpiderError>;
}
