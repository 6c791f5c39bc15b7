//! The command line's spider: follow links within the allowed domains and
//! emit one item per page, built on the library's `Spider` trait.
//!
//! It is plain configuration (serializable, so worker processes can rebuild
//! it) plus the compiled regexes and selectors, built once per process.

use std::sync::OnceLock;

use anyhow::Context;
use regex::RegexSet;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use spindle::{Item, LinkExtractor, Output, Request, Response, Spider, SpiderError};

#[derive(Serialize, Deserialize)]
pub struct FollowSpider {
    start_urls: Vec<String>,
    allowed_domains: Vec<String>,
    /// Links must match one of these to be followed; empty follows all.
    follow: Vec<String>,
    /// (name, CSS selector) of each item field beyond url, status and depth.
    fields: Vec<(String, String)>,
    #[serde(skip)]
    compiled: OnceLock<Compiled>,
}

struct Compiled {
    follow: RegexSet,
    extractor: LinkExtractor,
}

impl FollowSpider {
    /// Checks everything up front, so a bad regex or selector fails before any fetch.
    pub fn new(
        start_urls: Vec<String>,
        allowed_domains: Vec<String>,
        follow: Vec<String>,
        fields: Vec<(String, String)>,
    ) -> anyhow::Result<Self> {
        for url in &start_urls {
            Request::get(url).context("bad start URL: give an absolute http:// or https:// URL")?;
        }
        let spider = FollowSpider {
            start_urls,
            allowed_domains,
            follow,
            fields,
            compiled: OnceLock::new(),
        };
        let compiled = spider.compile()?;
        let _ = spider.compiled.set(compiled);
        Ok(spider)
    }

    fn compile(&self) -> anyhow::Result<Compiled> {
        let follow = RegexSet::new(&self.follow).context("bad --follow regex")?;
        let mut extractor = LinkExtractor::new();
        for (name, css) in &self.fields {
            extractor = extractor.with_field(name, css)?;
        }
        Ok(Compiled { follow, extractor })
    }

    fn compiled(&self) -> &Compiled {
        self.compiled
            .get_or_init(|| self.compile().expect("checked when the spider was made"))
    }
}

impl Spider for FollowSpider {
    fn name(&self) -> &str {
        "follow"
    }

    fn start_requests(&self) -> Vec<Request> {
        self.start_urls
            .iter()
            .map(|u| Request::get(u).expect("checked when the spider was made"))
            .collect()
    }

    fn allowed_domains(&self) -> Vec<String> {
        self.allowed_domains.clone()
    }

    fn parse(&self, response: &Response) -> Result<Output, SpiderError> {
        let Compiled { follow, extractor } = self.compiled();
        let mut item = Item::new();
        item.insert("url".into(), response.url.as_str().into());
        item.insert("status".into(), response.status.into());
        item.insert("depth".into(), response.depth().into());
        let mut out = Output::default();
        if response.is_html() {
            let page =
                extractor.extract(&response.body, &response.url, response.charset().as_deref());
            for (name, value) in page.fields {
                item.insert(name, value.map_or(Value::Null, Value::String));
            }
            if page.skipped_links > 0 {
                out.stats
                    .push(("linkextractor/skipped_links", page.skipped_links as u64));
            }
            for mut link in page.links {
                link.set_fragment(None);
                if follow.is_empty() || follow.is_match(link.as_str()) {
                    out.requests.push(Request::new(link));
                }
            }
        } else {
            for name in extractor.field_names() {
                item.insert(name.to_string(), Value::Null);
            }
        }
        out.items.push(item);
        Ok(out)
    }
}
