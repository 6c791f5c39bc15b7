//! The command line's spider: follow links within the allowed domains and
//! emit one item per page, built on the library's `Spider` trait.
//!
//! It is plain configuration (serializable, so worker processes can rebuild
//! it) plus the compiled regexes and selectors, built once per process.
//!
//! Fields take the cheapest path that gives parsel's answer: a plain CSS
//! selector (the element's whole trimmed text) and `CSS::attr(NAME)` are read
//! in the streaming lol_html pass that finds the links; `::text`, XPath and
//! CSS that lol_html does not support build a DOM (the `selector` module),
//! once per page and only when such a field is asked for.

use std::collections::HashSet;
use std::sync::OnceLock;

use anyhow::{bail, Context};
use regex::RegexSet;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use spindle::selector::{Document, Selector};
use spindle::{Item, LinkExtractor, Output, Request, Response, Spider, SpiderError};
use url::Url;

use crate::sitemap;

/// The callback label of sitemap requests.
pub const SITEMAP: &str = "sitemap";
/// The callback label of robots.txt requests read for their `Sitemap:` lines.
pub const ROBOTS_SITEMAPS: &str = "robots-sitemaps";

/// One `--field` or `--field-all`.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct FieldSpec {
    pub name: String,
    pub selector: String,
    /// Every match as a list (`--field-all`), not just the first.
    pub all: bool,
}

/// What the command line asked the spider to do.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct SpiderConfig {
    pub start_urls: Vec<String>,
    pub allowed_domains: Vec<String>,
    /// Links must match one of these to be followed; empty follows all.
    pub follow: Vec<String>,
    /// Follow no links from pages (start URLs and sitemap entries are still crawled).
    pub no_follow: bool,
    /// Links matching one of these are not followed.
    pub deny: Vec<String>,
    /// Links to these domains (and their subdomains) are not followed.
    pub deny_domains: Vec<String>,
    /// Only links inside an element these CSS selectors match are followed.
    pub restrict_css: Vec<String>,
    /// Tags and attributes links are taken from; empty means `a`/`area` and `href`.
    pub follow_tags: Vec<String>,
    pub follow_attrs: Vec<String>,
    pub fields: Vec<FieldSpec>,
    /// Sitemap URLs; a URL whose path is `/robots.txt` is read for its `Sitemap:` lines.
    pub sitemaps: Vec<String>,
    /// Which sitemaps of a sitemap index are followed; empty follows all.
    pub sitemap_follow: Vec<String>,
    /// Only sitemap entries with a `<lastmod>` on or after this date (or none) are crawled.
    pub sitemap_since: Option<String>,
}

#[derive(Serialize, Deserialize)]
pub struct FollowSpider {
    config: SpiderConfig,
    #[serde(skip)]
    compiled: OnceLock<Compiled>,
}

enum FieldPlan {
    /// The n-th text field of the streaming extractor.
    Text(usize),
    /// The n-th attribute field of the streaming extractor.
    Attr(usize),
    /// A selector run on a DOM.
    Dom(Selector),
}

struct Compiled {
    follow: RegexSet,
    deny: RegexSet,
    sitemap_follow: RegexSet,
    extractor: LinkExtractor,
    fields: Vec<(FieldSpec, FieldPlan)>,
    needs_dom: bool,
}

/// What one page gives: its item, and the links a crawl would follow from it.
pub struct Page {
    pub item: Item,
    pub links: Vec<Url>,
    pub skipped_links: usize,
    /// Links dropped because the page had them before (Scrapy's `LinkExtractor(unique=True)`).
    pub repeated_links: usize,
}

impl FollowSpider {
    /// Checks everything up front, so a bad regex or selector fails before any fetch.
    pub fn new(config: SpiderConfig) -> anyhow::Result<Self> {
        for url in &config.start_urls {
            Request::get(url).context("bad start URL: give an absolute http:// or https:// URL")?;
        }
        for url in &config.sitemaps {
            Request::get(url).with_context(|| {
                format!(
                    "bad --sitemap `{url}`: give an absolute http:// or https:// URL, or `robots`"
                )
            })?;
        }
        if let Some(since) = &config.sitemap_since {
            sitemap::check_date(since)?;
        }
        let spider = FollowSpider {
            config,
            compiled: OnceLock::new(),
        };
        let compiled = spider.compile()?;
        let _ = spider.compiled.set(compiled);
        Ok(spider)
    }

    pub fn config(&self) -> &SpiderConfig {
        &self.config
    }

    fn compile(&self) -> anyhow::Result<Compiled> {
        let c = &self.config;
        let follow = RegexSet::new(&c.follow).context("bad --follow regex")?;
        let deny = RegexSet::new(&c.deny).context("bad --deny regex")?;
        let sitemap_follow =
            RegexSet::new(&c.sitemap_follow).context("bad --sitemap-follow regex")?;
        let mut extractor = LinkExtractor::new();
        if !c.follow_tags.is_empty() || !c.follow_attrs.is_empty() {
            let or = |given: &[String], default: &[&str]| -> Vec<String> {
                if given.is_empty() {
                    default.iter().map(|s| s.to_string()).collect()
                } else {
                    given.to_vec()
                }
            };
            extractor = extractor
                .link_sources(
                    &or(&c.follow_tags, &["a", "area"]),
                    &or(&c.follow_attrs, &["href"]),
                )
                .context("bad --follow-tag or --follow-attr")?;
        }
        for css in &c.restrict_css {
            Selector::css(css).with_context(|| format!("bad --restrict-css `{css}`"))?;
            extractor = extractor.restrict(css).with_context(|| {
                format!("--restrict-css `{css}`: the streaming link pass cannot take this selector; use a simpler one")
            })?;
        }
        let mut fields = Vec::new();
        let (mut texts, mut attrs) = (0, 0);
        for spec in &c.fields {
            let flag = if spec.all { "--field-all" } else { "--field" };
            let selector = Selector::parse(&spec.selector).with_context(|| {
                format!(
                    "{flag} `{}`: give CSS (`h1`, `h1::text`, `a::attr(href)`) or XPath starting with `/`, `./` or `(`",
                    spec.name
                )
            })?;
            let plan = if selector.is_xpath() {
                None
            } else if !spec.selector.contains("::") && !spec.all {
                match extractor.clone().with_field(&spec.name, &spec.selector) {
                    Ok(e) => {
                        extractor = e;
                        texts += 1;
                        Some(FieldPlan::Text(texts - 1))
                    }
                    Err(_) => None,
                }
            } else if let Some((css, attr)) = split_attr(&spec.selector) {
                match extractor
                    .clone()
                    .with_attr_field(&spec.name, css, attr, spec.all)
                {
                    Ok(e) => {
                        extractor = e;
                        attrs += 1;
                        Some(FieldPlan::Attr(attrs - 1))
                    }
                    Err(_) => None,
                }
            } else {
                None
            };
            let plan = plan.unwrap_or_else(|| FieldPlan::Dom(selector.absolute(true)));
            fields.push((spec.clone(), plan));
        }
        let needs_dom = fields.iter().any(|(_, p)| matches!(p, FieldPlan::Dom(_)));
        Ok(Compiled {
            follow,
            deny,
            sitemap_follow,
            extractor,
            fields,
            needs_dom,
        })
    }

    fn compiled(&self) -> &Compiled {
        self.compiled
            .get_or_init(|| self.compile().expect("checked when the spider was made"))
    }

    /// Whether a link found on a page passes `--no-follow`, `--follow`, `--deny` and
    /// `--deny-domain`.
    pub fn wants(&self, url: &Url) -> bool {
        let c = self.compiled();
        !self.config.no_follow
            && (c.follow.is_empty() || c.follow.is_match(url.as_str()))
            && !self.denies(url)
    }

    /// Whether `--deny` or `--deny-domain` refuses a URL (a link or a sitemap entry).
    pub fn denies(&self, url: &Url) -> bool {
        let deny = &self.compiled().deny;
        (!deny.is_empty() && deny.is_match(url.as_str()))
            || url
                .host_str()
                .is_some_and(|host| in_domains(host, &self.config.deny_domains))
    }

    /// The item of one page and the links a crawl would follow from it (before the offsite
    /// filter, which the engine applies).
    pub fn page(&self, response: &Response) -> Page {
        let c = self.compiled();
        let mut item = Item::new();
        item.insert("url".into(), response.url.as_str().into());
        item.insert("status".into(), response.status.into());
        item.insert("depth".into(), response.depth().into());
        if !response.is_html() {
            for (spec, _) in &c.fields {
                let empty = if spec.all {
                    Value::Array(vec![])
                } else {
                    Value::Null
                };
                item.insert(spec.name.clone(), empty);
            }
            return Page {
                item,
                links: Vec::new(),
                skipped_links: 0,
                repeated_links: 0,
            };
        }
        let mut page =
            c.extractor
                .extract(&response.body, &response.url, response.charset().as_deref());
        let doc = c
            .needs_dom
            .then(|| Document::parse(&response.text(), Some(&response.url)));
        for (spec, plan) in &c.fields {
            let value = match plan {
                FieldPlan::Text(i) => page.fields[*i].1.take().map_or(Value::Null, Value::String),
                FieldPlan::Attr(i) => values(std::mem::take(&mut page.attr_fields[*i].1), spec.all),
                FieldPlan::Dom(selector) => {
                    values(selector.getall(doc.as_ref().expect("parsed")), spec.all)
                }
            };
            item.insert(spec.name.clone(), value);
        }
        let mut links: Vec<Url> = page
            .links
            .into_iter()
            .map(|mut link| {
                if link.fragment().is_some() {
                    link.set_fragment(None);
                }
                link
            })
            .filter(|link| self.wants(link))
            .collect();
        // A page's menus and sidebars repeat links: each is followed once per
        // page, as Scrapy's link extractor does (`unique=True`), rather than
        // made into a request for the duplicate filter to drop.
        let found = links.len();
        let first: Vec<bool> = {
            let mut seen = HashSet::with_capacity(found);
            links
                .iter()
                .map(|link| seen.insert(link.as_str()))
                .collect()
        };
        let mut i = 0;
        links.retain(|_| {
            i += 1;
            first[i - 1]
        });
        Page {
            item,
            repeated_links: found - links.len(),
            links,
            skipped_links: page.skipped_links,
        }
    }

    fn sitemap_output(&self, response: &Response) -> Output {
        let mut out = Output::default();
        let c = self.compiled();
        match sitemap::parse(&response.body) {
            Err(error) => {
                tracing::warn!(url = %response.url, "sitemap refused: {error}");
                out.stats.push(("sitemap/refused_count", 1));
            }
            Ok(map) => {
                out.stats.push(("sitemap/count", 1));
                if map.truncated {
                    tracing::warn!(url = %response.url, "sitemap has more than {} URLs: the rest are ignored", sitemap::MAX_URLS);
                    out.stats.push(("sitemap/truncated_count", 1));
                }
                for entry in map.entries {
                    let Ok(url) = response.url.join(entry.loc.trim()) else {
                        out.stats.push(("sitemap/bad_loc_count", 1));
                        continue;
                    };
                    if spindle::check_crawlable(&url).is_err() {
                        out.stats.push(("sitemap/bad_loc_count", 1));
                        continue;
                    }
                    match map.kind {
                        sitemap::Kind::Index => {
                            if c.sitemap_follow.is_empty()
                                || c.sitemap_follow.is_match(url.as_str())
                            {
                                out.requests.push(Request::new(url).with_callback(SITEMAP));
                            }
                        }
                        sitemap::Kind::UrlSet => {
                            let fresh = match (&self.config.sitemap_since, &entry.lastmod) {
                                (Some(since), Some(lastmod)) => {
                                    sitemap::on_or_after(lastmod, since)
                                }
                                _ => true,
                            };
                            if !fresh {
                                out.stats.push(("sitemap/old_count", 1));
                            } else if !self.denies(&url) {
                                out.requests.push(Request::new(url));
                            }
                        }
                    }
                }
            }
        }
        out
    }
}

/// `CSS::attr(NAME)` split into the CSS and the attribute's name, when the CSS has no other
/// pseudo-element and is a single selector (no comma).
fn split_attr(selector: &str) -> Option<(&str, &str)> {
    let (css, rest) = selector.trim().rsplit_once("::attr(")?;
    let name = rest.strip_suffix(')')?.trim();
    let simple = !css.contains("::") && !css.contains(',') && !css.trim().is_empty();
    let plain_name = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    (simple && plain_name).then_some((css.trim(), name))
}

fn values(mut found: Vec<String>, all: bool) -> Value {
    if all {
        Value::Array(found.into_iter().map(Value::String).collect())
    } else if found.is_empty() {
        Value::Null
    } else {
        Value::String(found.swap_remove(0))
    }
}

/// Whether `host` is one of `domains` or a subdomain of one.
pub fn in_domains(host: &str, domains: &[String]) -> bool {
    if domains.is_empty() {
        return false;
    }
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    domains.iter().any(|d| {
        host == *d
            || (host.len() > d.len()
                && host.ends_with(d.as_str())
                && host.as_bytes()[host.len() - d.len() - 1] == b'.')
    })
}

/// A `--allow-domain` or `--deny-domain` value: a host name, lower-cased. URLs, ports, paths
/// and empty values are refused with what to give instead.
pub fn check_domain(flag: &str, value: &str) -> anyhow::Result<String> {
    let d = value.trim().trim_end_matches('.').to_ascii_lowercase();
    if d.is_empty() {
        bail!("{flag} is empty: give a host name such as example.com");
    }
    if d.contains("://") || d.contains(['/', ':', '?', '#', '@', ' ']) {
        let hint = Url::parse(value)
            .ok()
            .and_then(|u| u.host_str().map(|h| format!(" (here: {flag} {h})")))
            .unwrap_or_default();
        bail!("{flag} `{value}` is not a host name: give the host alone, without scheme, port or path{hint}");
    }
    Ok(d)
}

impl Spider for FollowSpider {
    fn name(&self) -> &str {
        "follow"
    }

    fn start_requests(&self) -> Vec<Request> {
        let mut requests: Vec<Request> = self
            .config
            .start_urls
            .iter()
            .map(|u| Request::get(u).expect("checked when the spider was made"))
            .collect();
        for url in &self.config.sitemaps {
            let request = Request::get(url).expect("checked when the spider was made");
            let label = if request.url.path() == "/robots.txt" {
                ROBOTS_SITEMAPS
            } else {
                SITEMAP
            };
            requests.push(request.with_callback(label));
        }
        requests
    }

    fn allowed_domains(&self) -> Vec<String> {
        self.config.allowed_domains.clone()
    }

    fn parse(&self, response: &Response) -> Result<Output, SpiderError> {
        match response.callback() {
            Some(SITEMAP) => return Ok(self.sitemap_output(response)),
            Some(ROBOTS_SITEMAPS) => {
                let mut out = Output::default();
                for url in sitemap::robots_sitemaps(&response.text(), &response.url) {
                    out.requests.push(Request::new(url).with_callback(SITEMAP));
                }
                return Ok(out);
            }
            _ => {}
        }
        let page = self.page(response);
        let mut out = Output::default();
        if page.skipped_links > 0 {
            out.stats
                .push(("linkextractor/skipped_links", page.skipped_links as u64));
        }
        if page.repeated_links > 0 {
            out.stats
                .push(("linkextractor/repeated_links", page.repeated_links as u64));
        }
        out.requests = page.links.into_iter().map(Request::new).collect();
        out.items.push(page.item);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attr_split_and_domains() {
        assert_eq!(split_attr("a.x::attr(href)"), Some(("a.x", "href")));
        assert_eq!(split_attr("a::attr(href), b::attr(src)"), None);
        assert_eq!(split_attr("h1::text"), None);
        assert!(in_domains("www.a.test", &["a.test".into()]));
        assert!(!in_domains("xa.test", &["a.test".into()]));
        assert!(check_domain("--allow-domain", "").is_err());
        let err = check_domain("--allow-domain", "http://py.docs.test/").unwrap_err();
        assert!(
            err.to_string().contains("--allow-domain py.docs.test"),
            "{err}"
        );
        assert_eq!(check_domain("--allow-domain", "A.test").unwrap(), "a.test");
    }
}
