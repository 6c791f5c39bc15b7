//! A downloaded response, as the engine hands it to a spider.

use std::time::Duration;

use bytes::Bytes;
use reqwest::header::HeaderMap;
use url::Url;

use crate::request::Request;

#[derive(Debug, Clone)]
pub struct Response {
    /// The URL that answered (the request's URL: redirects are new requests).
    pub url: Url,
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub request: Request,
    /// Time from sending the request until the body had arrived.
    pub latency: Duration,
}

impl Response {
    pub fn depth(&self) -> u32 {
        self.request.depth
    }

    /// The `Content-Type` header's media type, lower-cased, without parameters.
    pub fn media_type(&self) -> Option<String> {
        let value = self
            .headers
            .get(reqwest::header::CONTENT_TYPE)?
            .to_str()
            .ok()?;
        let media = value.split(';').next()?.trim().to_ascii_lowercase();
        Some(media)
    }

    /// The charset the `Content-Type` header names, if any.
    pub fn charset(&self) -> Option<String> {
        let value = self
            .headers
            .get(reqwest::header::CONTENT_TYPE)?
            .to_str()
            .ok()?;
        value.split(';').skip(1).find_map(|param| {
            let (k, v) = param.split_once('=')?;
            k.trim()
                .eq_ignore_ascii_case("charset")
                .then(|| v.trim().trim_matches('"').to_string())
        })
    }

    /// Whether the body should be parsed as HTML: declared HTML, or no type at all.
    pub fn is_html(&self) -> bool {
        match self.media_type() {
            None => true,
            Some(m) => m == "text/html" || m == "application/xhtml+xml",
        }
    }
}
