//! Redirects (`REDIRECT_MAX_TIMES`), followed as new requests.
//!
//! A redirect goes back through the scheduler like any request, so slots,
//! robots.txt, the offsite filter and the duplicate filter apply to it, and
//! a redirect loop ends at the duplicate filter.

use http::header::{CONTENT_LENGTH, CONTENT_TYPE, COOKIE, LOCATION};
use http::Method;
use tracing::debug;
use url::Url;

use super::{Action, Context, DownloaderMiddleware};
use crate::request::check_crawlable;
use crate::response::Response;

/// Follows 3xx responses that carry a `Location`.
pub struct Redirect {
    max_times: u32,
}

impl Redirect {
    /// Follows at most `max_times` redirects in a row (`REDIRECT_MAX_TIMES`).
    pub fn new(max_times: u32) -> Self {
        Redirect { max_times }
    }
}

impl DownloaderMiddleware for Redirect {
    fn process_response(&mut self, response: &mut Response, cx: &mut Context<'_>) -> Action {
        let status = response.status;
        let request = &response.request;
        if !(300..400).contains(&status) {
            return Action::Continue;
        }
        let Some(target) = redirect_target(response) else {
            return Action::Continue;
        };
        if request.redirects >= self.max_times {
            debug!(url = %request.url, "discarding: max redirections reached");
            cx.inc_stat("redirect/max_reached", 1);
            return Action::Drop;
        }
        if check_crawlable(&target).is_err() {
            cx.inc_stat("redirect/unsupported_scheme", 1);
            return Action::Drop;
        }
        // The redirect carries the whole request (data, label, cookie jar,
        // headers) to its new URL. As browsers and Scrapy do, a 301, 302 or
        // 303 turns a POST (any method but HEAD) into a GET without a body;
        // 307 and 308 keep the method and body.
        let mut next = request.clone();
        next.url = target;
        next.priority += 2;
        next.redirects += 1;
        next.retries = 0;
        if matches!(status, 301..=303) && next.method != Method::HEAD {
            next.method = Method::GET;
            next.body = bytes::Bytes::new();
            next.headers.remove(CONTENT_TYPE);
            next.headers.remove(CONTENT_LENGTH);
        }
        // The cookie jar sets the Cookie header afresh for the new URL.
        next.headers.remove(COOKIE);
        Action::Follow(next)
    }
}

fn redirect_target(response: &Response) -> Option<Url> {
    let location = response.headers.get(LOCATION)?.to_str().ok()?;
    response.url.join(location.trim()).ok()
}
