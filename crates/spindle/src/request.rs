//! A request to download, as it travels from a spider through the scheduler
//! to the downloader, and back on its response.
//!
//! A `Request` is serializable whole (serde): worker processes, an on-disk
//! frontier and a shared one all carry this one type, with its method,
//! headers, body, data and callback label.

use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue, ACCEPT, CONTENT_TYPE};
use http::Method;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use url::Url;

/// One HTTP request to make, and what the engine needs to know to schedule it.
///
/// Build one with [`Request::get`], [`Request::post`], [`Request::form`]
/// (Scrapy's `FormRequest`) or [`Request::json`] (Scrapy's `JsonRequest`),
/// then refine it with the `with_*` methods.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// The absolute http or https URL.
    pub url: Url,
    /// The HTTP method.
    #[serde(with = "method_serde")]
    pub method: Method,
    /// Headers sent with this request, on top of `DEFAULT_REQUEST_HEADERS`
    /// (a header set here wins over the default of the same name).
    #[serde(with = "headers_serde")]
    pub headers: HeaderMap,
    /// The request body (empty for most GETs).
    pub body: Bytes,
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
    /// A label that routes the response to the right parse step (Scrapy's
    /// `callback`, Crawlee's `label`); read it back with [`crate::Response::callback`].
    pub callback: Option<String>,
    /// Which cookie jar this request uses (Scrapy's `cookiejar` meta); `None` is the crawl's jar.
    pub cookiejar: Option<String>,
    /// An HTTP proxy for this request only (Scrapy's `proxy` meta), e.g. `http://127.0.0.1:3128`.
    pub proxy: Option<Url>,
    /// A bound on this request alone, instead of `DOWNLOAD_TIMEOUT`.
    pub timeout: Option<Duration>,
    /// Redirects already followed to reach this request.
    pub redirects: u32,
    /// Retries already made of this request.
    pub retries: u32,
    /// Data that comes back on the response (Scrapy's `meta`/`cb_kwargs`,
    /// Crawlee's `userData`), kept as JSON text so it survives any wire or store.
    data: Option<String>,
    /// Worker processes that died while holding this request.
    pub(crate) crashes: u32,
    pub(crate) purpose: Purpose,
    /// Its number in the job's store (JOBDIR); 0 when it is not stored.
    /// Kept on retries, so the stored entry is the same until the request is done.
    #[serde(default)]
    pub(crate) job: u64,
}

/// Why the engine fetches a request.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub(crate) enum Purpose {
    #[default]
    Page,
    /// The robots.txt of this origin.
    Robots { origin: String },
}

impl Request {
    /// A GET of `url`, with every other field at its default.
    pub fn new(url: Url) -> Self {
        Request {
            url,
            method: Method::GET,
            headers: HeaderMap::new(),
            body: Bytes::new(),
            priority: 0,
            depth: 0,
            slot: None,
            dont_filter: false,
            callback: None,
            cookiejar: None,
            proxy: None,
            timeout: None,
            redirects: 0,
            retries: 0,
            data: None,
            crashes: 0,
            purpose: Purpose::Page,
            job: 0,
        }
    }

    /// A GET of `url`, which must be absolute http or https.
    pub fn get(url: &str) -> Result<Self, InvalidUrl> {
        parse_crawlable(url).map(Request::new)
    }

    /// A POST of `url` with an empty body.
    pub fn post(url: &str) -> Result<Self, InvalidUrl> {
        Ok(Request::get(url)?.with_method(Method::POST))
    }

    /// A POST of an HTML form, `application/x-www-form-urlencoded` (Scrapy's `FormRequest`).
    pub fn form<K: AsRef<str>, V: AsRef<str>>(
        url: &str,
        fields: &[(K, V)],
    ) -> Result<Self, InvalidUrl> {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(fields.iter().map(|(k, v)| (k.as_ref(), v.as_ref())))
            .finish();
        let mut request = Request::post(url)?.with_body(body);
        request.headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        Ok(request)
    }

    /// A POST of a JSON body, with JSON content type and accept headers (Scrapy's `JsonRequest`).
    pub fn json(url: &str, body: &impl Serialize) -> Result<Self, RequestError> {
        let body = serde_json::to_vec(body).map_err(|e| RequestError::Json(e.to_string()))?;
        let mut request = Request::post(url)?.with_body(body);
        request
            .headers
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        request.headers.insert(
            ACCEPT,
            HeaderValue::from_static("application/json, text/javascript, */*; q=0.01"),
        );
        Ok(request)
    }

    /// The same request with another method.
    pub fn with_method(mut self, method: Method) -> Self {
        self.method = method;
        self
    }

    /// Adds a header; a header of the same name given earlier is replaced.
    pub fn with_header(mut self, name: &str, value: &str) -> Result<Self, RequestError> {
        let (name, value) = parse_header(name, value)?;
        self.headers.insert(name, value);
        Ok(self)
    }

    /// Sets the body.
    pub fn with_body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }

    /// Sets the priority within the request's slot.
    pub fn with_priority(mut self, priority: i32) -> Self {
        self.priority = priority;
        self
    }

    /// Puts the request in a named download slot instead of its host's.
    pub fn with_slot(mut self, slot: impl Into<String>) -> Self {
        self.slot = Some(slot.into());
        self
    }

    /// Labels the request, so its response can be routed to the right parse step.
    pub fn with_callback(mut self, label: impl Into<String>) -> Self {
        self.callback = Some(label.into());
        self
    }

    /// Uses the named cookie jar instead of the crawl's one.
    pub fn with_cookiejar(mut self, jar: impl Into<String>) -> Self {
        self.cookiejar = Some(jar.into());
        self
    }

    /// Skips the duplicate filter for this request.
    pub fn dont_filter(mut self) -> Self {
        self.dont_filter = true;
        self
    }

    /// Attaches data that comes back on the response: any serde value (a
    /// `serde_json::json!` map, or a struct of your own).
    ///
    /// # Panics
    /// If the value cannot be written as JSON (a map with non-string keys).
    pub fn with_data(mut self, data: impl Serialize) -> Self {
        let text = serde_json::to_string(&data)
            .expect("request data must serialize to JSON (maps need string keys)");
        self.data = Some(text);
        self
    }

    /// The attached data as `T`; `T` is read from JSON `null` when there is none.
    pub fn data<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_str(self.data.as_deref().unwrap_or("null"))
    }

    /// The attached data as a JSON value (`Null` when there is none).
    pub fn data_value(&self) -> serde_json::Value {
        self.data().unwrap_or(serde_json::Value::Null)
    }

    /// Whether the request was made for the engine's own use (a robots.txt).
    pub(crate) fn is_robots(&self) -> bool {
        matches!(self.purpose, Purpose::Robots { .. })
    }

    /// The origin whose robots.txt this request fetches, if it does.
    pub(crate) fn robots_origin(&self) -> Option<&str> {
        match &self.purpose {
            Purpose::Robots { origin } => Some(origin),
            Purpose::Page => None,
        }
    }

    /// The queue a job's store files this request under: its named slot, else
    /// its host. Unlike the scheduler's slot key it needs no DNS, so it is
    /// known the moment the request is admitted.
    pub(crate) fn queue_key(&self) -> String {
        match &self.slot {
            Some(slot) => slot.clone(),
            None => self.url.host_str().unwrap_or_default().to_ascii_lowercase(),
        }
    }

    /// The duplicate filter's fingerprint: method, canonical URL and body, as
    /// Scrapy's `request_fingerprint`, so two POSTs with different bodies are
    /// two requests. A GET without a body hashes its canonical URL alone.
    pub fn fingerprint(&self) -> u64 {
        let url_fp = crate::scheduler::fingerprint(&self.url);
        if self.method == Method::GET && self.body.is_empty() {
            return url_fp;
        }
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        h.update(self.method.as_str().as_bytes());
        h.update(&[0]);
        h.update(&url_fp.to_le_bytes());
        h.update(&(self.body.len() as u64).to_le_bytes());
        h.update(&self.body);
        h.digest()
    }
}

/// A URL the crawler cannot fetch.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
#[error("invalid URL `{url}`: {reason}")]
pub struct InvalidUrl {
    /// The URL as given.
    pub url: String,
    /// What is wrong with it.
    pub reason: String,
}

/// A request that cannot be built as asked.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum RequestError {
    /// The URL is not an absolute http or https URL.
    #[error(transparent)]
    Url(#[from] InvalidUrl),
    /// A header name or value is not valid HTTP.
    #[error("invalid header `{name}`: {reason}")]
    Header {
        /// The header as given.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The JSON body could not be encoded.
    #[error("cannot encode the body as JSON: {0}")]
    Json(String),
}

/// Parses a header name and value, saying which part is wrong.
pub fn parse_header(name: &str, value: &str) -> Result<(HeaderName, HeaderValue), RequestError> {
    let bad = |reason: &str| RequestError::Header {
        name: name.to_string(),
        reason: reason.to_string(),
    };
    let header_name = HeaderName::from_bytes(name.trim().as_bytes())
        .map_err(|_| bad("not a valid header name (letters, digits and -)"))?;
    let header_value = HeaderValue::from_str(value.trim())
        .map_err(|_| bad("the value must be visible ASCII on one line"))?;
    Ok((header_name, header_value))
}

/// Parses `url` and checks that the crawler can fetch it.
pub(crate) fn parse_crawlable(url: &str) -> Result<Url, InvalidUrl> {
    let invalid = |reason: String| InvalidUrl {
        url: url.to_string(),
        reason,
    };
    let parsed = Url::parse(url).map_err(|e| invalid(e.to_string()))?;
    check_crawlable(&parsed).map_err(|reason| invalid(reason.to_string()))?;
    Ok(parsed)
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

/// Methods travel as their names.
mod method_serde {
    use http::Method;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(m: &Method, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(m.as_str())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Method, D::Error> {
        let name = String::deserialize(d)?;
        Method::from_bytes(name.as_bytes()).map_err(serde::de::Error::custom)
    }
}

/// Headers travel as (name, value bytes) pairs, in order, repeats kept.
mod headers_serde {
    use http::header::{HeaderMap, HeaderName, HeaderValue};
    use serde::ser::SerializeSeq;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(h: &HeaderMap, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(h.len()))?;
        for (name, value) in h {
            seq.serialize_element(&(name.as_str(), value.as_bytes()))?;
        }
        seq.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<HeaderMap, D::Error> {
        let pairs = Vec::<(String, Vec<u8>)>::deserialize(d)?;
        let mut map = HeaderMap::with_capacity(pairs.len());
        for (name, value) in pairs {
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(serde::de::Error::custom)?;
            let value = HeaderValue::from_bytes(&value).map_err(serde::de::Error::custom)?;
            map.append(name, value);
        }
        Ok(map)
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

    #[test]
    fn fingerprint_covers_method_url_and_body() {
        let get = Request::get("http://a.test/x?b=2&a=1").unwrap();
        let same = Request::get("http://a.test/x?a=1&b=2#frag").unwrap();
        assert_eq!(get.fingerprint(), same.fingerprint(), "canonical URL");
        let post = Request::post("http://a.test/x?a=1&b=2").unwrap();
        assert_ne!(get.fingerprint(), post.fingerprint(), "method counts");
        let one = Request::form("http://a.test/s", &[("q", "one")]).unwrap();
        let two = Request::form("http://a.test/s", &[("q", "two")]).unwrap();
        let one_again = Request::form("http://a.test/s", &[("q", "one")]).unwrap();
        assert_ne!(one.fingerprint(), two.fingerprint(), "body counts");
        assert_eq!(one.fingerprint(), one_again.fingerprint());
    }

    #[test]
    fn form_and_json_bodies() {
        let r = Request::form("http://a.test/login", &[("user", "ann e"), ("pw", "&=")]).unwrap();
        assert_eq!(r.method, Method::POST);
        assert_eq!(&r.body[..], b"user=ann+e&pw=%26%3D");
        assert_eq!(r.headers[CONTENT_TYPE], "application/x-www-form-urlencoded");
        let j = Request::json("http://a.test/api", &serde_json::json!({"page": 2})).unwrap();
        assert_eq!(&j.body[..], br#"{"page":2}"#);
        assert_eq!(j.headers[CONTENT_TYPE], "application/json");
    }

    #[test]
    fn serializes_whole_through_postcard_and_json() {
        #[derive(Serialize, Deserialize, PartialEq, Debug)]
        struct Listing {
            category: String,
            rank: u32,
        }
        let mut r = Request::json("http://a.test/api?x=1", &serde_json::json!({"q": "é"}))
            .unwrap()
            .with_header("X-Token", "abc")
            .unwrap()
            .with_callback("detail")
            .with_cookiejar("session-2")
            .with_priority(-3)
            .with_data(Listing {
                category: "books".into(),
                rank: 7,
            });
        r.timeout = Some(Duration::from_millis(1500));
        r.headers.append("x-multi", HeaderValue::from_static("1"));
        r.headers.append("x-multi", HeaderValue::from_static("2"));
        let bytes = postcard::to_allocvec(&r).unwrap();
        let back: Request = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, r);
        let text = serde_json::to_string(&r).unwrap();
        let back: Request = serde_json::from_str(&text).unwrap();
        assert_eq!(back, r);
        let data: Listing = back.data().unwrap();
        assert_eq!(data.rank, 7);
        assert_eq!(back.headers.get_all("x-multi").iter().count(), 2);
    }

    #[test]
    fn bad_headers_say_which_part_is_wrong() {
        let r = Request::get("http://a.test/").unwrap();
        let err = r.clone().with_header("Bad Name", "v").unwrap_err();
        assert!(err.to_string().contains("header name"), "{err}");
        let err = r.with_header("X-Ok", "line\nbreak").unwrap_err();
        assert!(err.to_string().contains("value"), "{err}");
    }
}
