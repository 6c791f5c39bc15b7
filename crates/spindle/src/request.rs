//! A request to download, as it travels from a spider through the scheduler to the downloader.

use url::Url;

/// One URL to fetch, and what the engine needs to know to schedule it.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub url: Url,
    /// Higher goes first, but only among requests of the same slot (as in
    /// Scrapy's `DownloaderAwarePriorityQueue`): priority never lets one site
    /// hold back another.
    pub priority: i32,
    /// Links followed from a start request. Set by the engine: a request a
    /// spider returns gets its response's depth + 1.
    pub depth: u32,
    /// Names the download slot instead of the host name (Scrapy's `download_slot` meta).
    pub slot: Option<String>,
    /// Skip the duplicate filter (Scrapy's `dont_filter`).
    pub dont_filter: bool,
    /// Redirects already followed to reach this request.
    pub redirects: u32,
    /// Retries already made of this request.
    pub retries: u32,
    /// Worker processes that died while holding this request.
    pub(crate) crashes: u32,
    pub(crate) purpose: Purpose,
}

/// Why the engine fetches a request.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) enum Purpose {
    #[default]
    Page,
    /// The robots.txt of this origin.
    Robots { origin: String },
}

impl Request {
    pub fn new(url: Url) -> Self {
        Request {
            url,
            priority: 0,
            depth: 0,
            slot: None,
            dont_filter: false,
            redirects: 0,
            retries: 0,
            crashes: 0,
            purpose: Purpose::Page,
        }
    }

    /// Parses `url`, which must be absolute http or https.
    pub fn get(url: &str) -> Result<Self, InvalidUrl> {
        let parsed = Url::parse(url).map_err(|e| InvalidUrl {
            url: url.to_string(),
            reason: e.to_string(),
        })?;
        check_crawlable(&parsed).map_err(|reason| InvalidUrl {
            url: url.to_string(),
            reason: reason.to_string(),
        })?;
        Ok(Request::new(parsed))
    }

    pub fn with_priority(mut self, priority: i32) -> Self {
        self.priority = priority;
        self
    }

    pub fn with_slot(mut self, slot: impl Into<String>) -> Self {
        self.slot = Some(slot.into());
        self
    }
}

/// A URL the crawler cannot fetch.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
#[error("invalid URL `{url}`: {reason}")]
pub struct InvalidUrl {
    pub url: String,
    pub reason: String,
}

/// Whether the crawler can fetch this URL at all: http or https with a host.
pub fn check_crawlable(url: &Url) -> Result<(), &'static str> {
    match url.scheme() {
        "http" | "https" => {}
        _ => return Err("only http and https URLs can be crawled"),
    }
    match url.host_str() {
        Some(h) if !h.is_empty() => Ok(()),
        _ => Err("the URL has no host name"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_absolute_http_urls() {
        assert!(Request::get("http://example.com/a").is_ok());
        assert!(Request::get("https://example.com").is_ok());
        for bad in [
            "example.com",
            "ftp://example.com/",
            "mailto:a@b.c",
            "http://",
            "/a/b",
        ] {
            let err = Request::get(bad).unwrap_err();
            assert_eq!(err.url, bad);
        }
    }
}
