//! Cookie jars (`COOKIES_ENABLED`, `COOKIES_DEBUG`, the `cookiejar` of a request).

use std::collections::HashMap;

use cookie_store::{CookieStore, RawCookie};
use http::header::{HeaderValue, COOKIE, SET_COOKIE};
use tracing::debug;

use super::{Action, Context, DownloaderMiddleware};
use crate::request::Request;
use crate::response::Response;

/// Cookie jars (`COOKIES_ENABLED`): one for the crawl, and one more for each
/// `cookiejar` name a request gives (Scrapy's `cookiejar` meta), so several
/// sessions can crawl one site side by side.
///
/// `Set-Cookie` is stored from every response, redirects included (a login
/// typically answers with a cookie and a 302). Domain, path, `Secure` and
/// expiry rules are the cookie_store crate's, which follows RFC 6265.
#[derive(Default)]
pub struct Cookies {
    jars: HashMap<Option<String>, CookieStore>,
    debug: bool,
}

impl Cookies {
    /// Empty jars; with `debug` (`COOKIES_DEBUG`), every cookie sent and received is logged.
    pub fn new(debug: bool) -> Self {
        Cookies {
            jars: HashMap::new(),
            debug,
        }
    }
}

impl DownloaderMiddleware for Cookies {
    fn process_request(&mut self, request: &mut Request, _: &mut Context<'_>) -> Action {
        let Some(jar) = self.jars.get(&request.cookiejar) else {
            return Action::Continue;
        };
        let header = jar
            .get_request_values(&request.url)
            .map(|(name, value)| format!("{name}={value}"))
            .collect::<Vec<_>>()
            .join("; ");
        if header.is_empty() {
            return Action::Continue;
        }
        if self.debug {
            debug!(url = %request.url, cookie = %header, "sending cookies");
        }
        match HeaderValue::from_str(&header) {
            Ok(value) => {
                request.headers.insert(COOKIE, value);
            }
            Err(_) => debug!(url = %request.url, "a stored cookie is not a valid header value"),
        }
        Action::Continue
    }

    fn process_response(&mut self, response: &mut Response, cx: &mut Context<'_>) -> Action {
        let cookies: Vec<RawCookie<'static>> = response
            .headers
            .get_all(SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(|text| match RawCookie::parse(text.to_string()) {
                Ok(cookie) => Some(cookie),
                Err(_) => {
                    cx.inc_stat("cookies/invalid_count", 1);
                    None
                }
            })
            .collect();
        if cookies.is_empty() {
            return Action::Continue;
        }
        if self.debug {
            for c in &cookies {
                debug!(url = %response.url, cookie = %c, "received cookie");
            }
        }
        self.jars
            .entry(response.request.cookiejar.clone())
            .or_default()
            .store_response_cookies(cookies.into_iter(), &response.url);
        Action::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::middleware::DefaultHeaders;
    use crate::stats::Stats;
    use bytes::Bytes;
    use http::header::HeaderMap;
    use std::time::Duration;

    fn answer(request: &Request, set_cookie: &[&str]) -> Response {
        let mut headers = HeaderMap::new();
        for c in set_cookie {
            headers.append(SET_COOKIE, c.parse().unwrap());
        }
        Response {
            url: request.url.clone(),
            status: 200,
            headers,
            body: Bytes::new(),
            request: request.clone(),
            latency: Duration::ZERO,
            headers_latency: Duration::ZERO,
        }
    }

    #[test]
    fn jars_keep_sessions_apart_and_honour_paths() {
        let mut stats = Stats::default();
        let mut cx = Context::new(&mut stats, "a.test", false);
        let mut mw = Cookies::new(false);
        let login = Request::get("http://a.test/login").unwrap();
        let mut resp = answer(&login, &["session=one; Path=/", "scoped=x; Path=/admin"]);
        mw.process_response(&mut resp, &mut cx);
        let other = Request::get("http://a.test/login")
            .unwrap()
            .with_cookiejar("2");
        let mut resp = answer(&other, &["session=two"]);
        mw.process_response(&mut resp, &mut cx);

        let mut page = Request::get("http://a.test/page").unwrap();
        mw.process_request(&mut page, &mut cx);
        assert_eq!(page.headers[COOKIE], "session=one");
        let mut admin = Request::get("http://a.test/admin/x").unwrap();
        mw.process_request(&mut admin, &mut cx);
        let sent = admin.headers[COOKIE].to_str().unwrap();
        assert!(
            sent.contains("session=one") && sent.contains("scoped=x"),
            "{sent}"
        );
        let mut second = Request::get("http://a.test/page")
            .unwrap()
            .with_cookiejar("2");
        mw.process_request(&mut second, &mut cx);
        assert_eq!(second.headers[COOKIE], "session=two");
        let mut elsewhere = Request::get("http://b.test/").unwrap();
        mw.process_request(&mut elsewhere, &mut cx);
        assert!(
            elsewhere.headers.get(COOKIE).is_none(),
            "other hosts get nothing"
        );
    }

    #[test]
    fn default_headers_never_override_the_request() {
        let mut stats = Stats::default();
        let mut cx = Context::new(&mut stats, "a.test", false);
        let mut defaults = HeaderMap::new();
        defaults.insert("accept-language", "en".parse().unwrap());
        defaults.insert("x-team", "default".parse().unwrap());
        let mut mw = DefaultHeaders::new(defaults);
        let mut r = Request::get("http://a.test/")
            .unwrap()
            .with_header("X-Team", "mine")
            .unwrap();
        mw.process_request(&mut r, &mut cx);
        assert_eq!(r.headers["x-team"], "mine");
        assert_eq!(r.headers["accept-language"], "en");
    }
}
