//! The command line's spider: follow links within the allowed domains and
//! emit one item per page, built on the library's `Spider` trait.

use regex::RegexSet;
use serde_json::Value;
use spindle::{Item, LinkExtractor, Output, Request, Response, Spider, SpiderError};

pub struct FollowSpider {
    pub start: Vec<Request>,
    pub allowed_domains: Vec<String>,
    /// Links must match one of these to be followed; empty follows all.
    pub follow: RegexSet,
    pub extractor: LinkExtractor,
}

impl Spider for FollowSpider {
    fn name(&self) -> &str {
        "follow"
    }

    fn start_requests(&self) -> Vec<Request> {
        self.start.clone()
    }

    fn allowed_domains(&self) -> Vec<String> {
        self.allowed_domains.clone()
    }

    fn parse(&self, response: &Response) -> Result<Output, SpiderError> {
        let mut item = Item::new();
        item.insert("url".into(), response.url.as_str().into());
        item.insert("status".into(), response.status.into());
        item.insert("depth".into(), response.depth().into());
        let mut out = Output::default();
        if response.is_html() {
            let page = self.extractor.extract(
                &response.body,
                &response.url,
                response.charset().as_deref(),
            );
            for (name, value) in page.fields {
                item.insert(name, value.map_or(Value::Null, Value::String));
            }
            if page.skipped_links > 0 {
                out.stats
                    .push(("linkextractor/skipped_links", page.skipped_links as u64));
            }
            for mut link in page.links {
                link.set_fragment(None);
                if self.follow.is_empty() || self.follow.is_match(link.as_str()) {
                    out.requests.push(Request::new(link));
                }
            }
        } else {
            for name in self.extractor.field_names() {
                item.insert(name.to_string(), Value::Null);
            }
        }
        out.items.push(item);
        Ok(out)
    }
}
