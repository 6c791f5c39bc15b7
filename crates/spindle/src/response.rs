//! A downloaded response, as the engine hands it to a spider.

use std::borrow::Cow;
use std::time::Duration;

use bytes::Bytes;
use http::header::HeaderMap;
use serde::de::DeserializeOwned;
use url::Url;

use crate::request::{check_crawlable, InvalidUrl, Request};
use crate::selector::{Document, Selector, SelectorError};

/// What a server answered to one [`Request`].
#[derive(Debug, Clone)]
pub struct Response {
    /// The URL that answered. Redirects are new requests that go through the
    /// scheduler, so after redirects this is the last URL of the chain.
    pub url: Url,
    /// The HTTP status.
    pub status: u16,
    /// Every response header.
    pub headers: HeaderMap,
    /// The body, decompressed.
    pub body: Bytes,
    /// The request this answers, with its data and callback label (carried
    /// through redirects).
    pub request: Request,
    /// Time from writing the request until the body had arrived.
    pub latency: Duration,
    /// Time from sending the request until the response headers had arrived:
    /// the latency Scrapy's AutoThrottle uses (`download_latency`), and
    /// spindle's too. Measured in the downloader, from the moment the
    /// request's first bytes were written to its socket (after the slot's
    /// send gate, so the politeness wait is not counted) to the head's arrival.
    pub headers_latency: Duration,
}

impl Response {
    /// Links followed from a start request to reach this page.
    pub fn depth(&self) -> u32 {
        self.request.depth
    }

    /// The request's callback label, to route the response to a parse step.
    pub fn callback(&self) -> Option<&str> {
        self.request.callback.as_deref()
    }

    /// The data attached to the request (see [`Request::with_data`]).
    pub fn data<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        self.request.data()
    }

    /// The `Content-Type` header's media type, lower-cased, without parameters.
    pub fn media_type(&self) -> Option<String> {
        let value = self
            .headers
            .get(http::header::CONTENT_TYPE)?
            .to_str()
            .ok()?;
        let media = value.split(';').next()?.trim().to_ascii_lowercase();
        Some(media)
    }

    /// The charset the `Content-Type` header names, if any.
    pub fn charset(&self) -> Option<String> {
        let value = self
            .headers
            .get(http::header::CONTENT_TYPE)?
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

    /// The body as text, decoded by the charset of the `Content-Type` header,
    /// else of a byte-order mark, else of a `<meta charset>` in the first
    /// 1,024 bytes (as browsers look), else UTF-8. Bytes invalid in that
    /// charset become U+FFFD.
    pub fn text(&self) -> Cow<'_, str> {
        let label = self.charset().or_else(|| meta_charset(&self.body));
        let encoding = label
            .and_then(|l| encoding_rs::Encoding::for_label(l.trim().as_bytes()))
            .unwrap_or(encoding_rs::UTF_8);
        // `decode` lets a byte-order mark override the label, as browsers do.
        encoding.decode(&self.body).0
    }

    /// The body parsed as JSON, for API responses.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(&self.body)
    }

    /// `href` made absolute against this response's URL (Scrapy's `urljoin`).
    pub fn urljoin(&self, href: &str) -> Result<Url, InvalidUrl> {
        let invalid = |reason: String| InvalidUrl {
            url: href.to_string(),
            reason,
        };
        let url = self
            .url
            .join(href.trim())
            .map_err(|e| invalid(e.to_string()))?;
        check_crawlable(&url).map_err(|r| invalid(r.to_string()))?;
        Ok(url)
    }

    /// A GET of `href`, made absolute against this response's URL (Scrapy's
    /// `response.follow`). Chain `with_callback`/`with_data` to route it.
    pub fn follow(&self, href: &str) -> Result<Request, InvalidUrl> {
        self.urljoin(href).map(Request::new)
    }
}

/// What a selector found on a page: [`Selection::get`] for the first match,
/// [`Selection::getall`] for every one (parsel's `.get()` and `.getall()`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Selection(Vec<String>);

impl Selection {
    /// The first match, if any.
    pub fn get(&self) -> Option<&str> {
        self.0.first().map(String::as_str)
    }

    /// Every match, in document order.
    pub fn getall(&self) -> &[String] {
        &self.0
    }

    /// Every match, owned.
    pub fn into_vec(self) -> Vec<String> {
        self.0
    }
}

impl Response {
    /// The page parsed as HTML, with its URL (and any `<base href>`) as the
    /// base for links. Parse once and select many times: a [`Document`]
    /// stays on the thread that parsed it.
    pub fn selector(&self) -> Document {
        Document::parse(&self.text(), Some(&self.url))
    }

    /// The matches of a CSS selector, with parsel's `::text` and
    /// `::attr(name)`; `href` and `src` values are made absolute. Parses the
    /// page on each call; use [`Response::selector`] for several queries.
    pub fn css(&self, query: &str) -> Result<Selection, SelectorError> {
        let selector = Selector::css(query)?.absolute(true);
        Ok(Selection(selector.getall(&self.selector())))
    }

    /// The matches of an XPath 1.0 expression (`//a/@href`, `//h1/text()`,
    /// `normalize-space(//title)`); `@href` and `@src` values are made absolute.
    pub fn xpath(&self, query: &str) -> Result<Selection, SelectorError> {
        let selector = Selector::xpath(query)?.absolute(true);
        Ok(Selection(selector.getall(&self.selector())))
    }
}

/// The charset a `<meta charset=…>` or `<meta http-equiv … content="…charset=…">`
/// declares near the start of a page.
fn meta_charset(body: &[u8]) -> Option<String> {
    let head = &body[..body.len().min(1024)];
    let text = String::from_utf8_lossy(head).to_ascii_lowercase();
    let at = text.find("charset=")? + "charset=".len();
    let value: String = text[at..]
        .trim_start_matches(['"', '\''])
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | ':' | '.'))
        .collect();
    (!value.is_empty()).then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(content_type: Option<&str>, body: &[u8]) -> Response {
        let request = Request::get("http://a.test/dir/page.html").unwrap();
        let mut headers = HeaderMap::new();
        if let Some(ct) = content_type {
            headers.insert(http::header::CONTENT_TYPE, ct.parse().unwrap());
        }
        Response {
            url: request.url.clone(),
            status: 200,
            headers,
            body: Bytes::copy_from_slice(body),
            request,
            latency: Duration::ZERO,
            headers_latency: Duration::ZERO,
        }
    }

    #[test]
    fn text_follows_header_then_meta_then_utf8() {
        let latin1 = b"caf\xe9";
        assert_eq!(
            response(Some("text/html; charset=ISO-8859-1"), latin1).text(),
            "café"
        );
        let meta = b"<meta charset=\"windows-1252\"><p>caf\xe9";
        assert!(response(Some("text/html"), meta).text().ends_with("café"));
        assert_eq!(response(None, "café".as_bytes()).text(), "café");
        assert_eq!(response(None, b"caf\xff").text(), "caf\u{fffd}");
    }

    #[test]
    fn follow_resolves_against_the_page() {
        let r = response(None, b"");
        let next = r.follow("../other?x=1#top").unwrap();
        assert_eq!(next.url.as_str(), "http://a.test/other?x=1#top");
        assert!(r.follow("mailto:a@b.c").is_err());
        assert!(r.follow("https://[bad").is_err());
    }

    #[test]
    fn css_and_xpath_select_from_the_page() {
        let html = r##"<html><head><title> Shop </title></head><body>
            <h1>Product <a href="#top">¶</a></h1>
            <a class="p" href="/product/1">one</a><a class="p" href="two">two</a></body></html>"##;
        let r = response(Some("text/html"), html.as_bytes());
        assert_eq!(r.css("h1::text").unwrap().get(), Some("Product "));
        assert_eq!(
            r.css("a.p::attr(href)").unwrap().getall(),
            ["http://a.test/product/1", "http://a.test/dir/two"]
        );
        assert_eq!(
            r.xpath("normalize-space(//title)").unwrap().get(),
            Some("Shop")
        );
        assert_eq!(
            r.xpath("//a[@class='p']/text()").unwrap().getall(),
            ["one", "two"]
        );
        assert!(r.css("h1[").is_err());
        assert!(r.xpath("//a[").is_err());
        assert_eq!(r.css("nav").unwrap().get(), None);
    }

    #[test]
    fn data_and_label_come_back() {
        let mut r = response(Some("application/json"), br#"{"n": 3}"#);
        r.request = r
            .request
            .clone()
            .with_callback("detail")
            .with_data(serde_json::json!({"from": "list"}));
        assert_eq!(r.callback(), Some("detail"));
        let data: serde_json::Value = r.data().unwrap();
        assert_eq!(data["from"], "list");
        let body: serde_json::Value = r.json().unwrap();
        assert_eq!(body["n"], 3);
    }
}
