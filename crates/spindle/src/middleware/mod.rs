//! Downloader middlewares: hooks around the downloader, run in order (Scrapy's
//! `DOWNLOADER_MIDDLEWARES`).
//!
//! Every request passes [`DownloaderMiddleware::process_request`] of each
//! middleware, in order, just before it is sent; every response passes
//! [`DownloaderMiddleware::process_response`], and every failed download
//! [`DownloaderMiddleware::process_exception`], of each in order, until one
//! returns something other than [`Action::Continue`]. They run in the
//! engine's event loop, also in multi-process mode (where the request they
//! prepare travels whole to the worker that sends it), so a middleware sees
//! every request of the crawl and keeps its state in one place. In
//! multi-process mode a page's body stays in the worker that parses it: a
//! middleware sees the status and headers of every response, and the body of
//! robots.txt only.
//!
//! The crawl's own behaviour is built on these hooks, in this order:
//! [`DefaultHeaders`] (`DEFAULT_REQUEST_HEADERS`), [`Cookies`] (with
//! `COOKIES_ENABLED`), then the middlewares given to
//! [`crate::Crawler::middleware`], then [`Retry`] (`RETRY_*`, `Retry-After`),
//! [`Redirect`] (`REDIRECT_MAX_TIMES`) and [`HttpError`] (non-2xx pages are
//! not parsed). Each keeps its own counters.

mod cookies;
mod headers;
mod httperror;
mod redirect;
mod retry;

use std::time::Duration;

use crate::downloader::DownloadError;
use crate::request::Request;
use crate::response::Response;
use crate::stats::Stats;

pub use cookies::Cookies;
pub use headers::DefaultHeaders;
pub use httperror::HttpError;
pub use redirect::Redirect;
pub use retry::Retry;

/// What a middleware decides about a request, response or failure.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Go on to the next middleware, then the downloader or the engine.
    Continue,
    /// Stop here: nothing more is done with it. The middleware counts why.
    Drop,
    /// Try this request again in the same download slot, past the duplicate
    /// filter (a retry). Any pause the middleware asked for applies first.
    Retry(Request),
    /// Schedule this new request instead, through the offsite and duplicate
    /// filters and robots.txt (a redirect).
    Follow(Request),
}

/// What a middleware can see and do beyond its request or response.
pub struct Context<'a> {
    stats: &'a mut Stats,
    slot: &'a str,
    closing: bool,
    pause: Option<Duration>,
}

impl<'a> Context<'a> {
    pub(crate) fn new(stats: &'a mut Stats, slot: &'a str, closing: bool) -> Self {
        Context {
            stats,
            slot,
            closing,
            pause: None,
        }
    }

    /// Adds `n` to the stat `key`.
    pub fn inc_stat(&mut self, key: &str, n: u64) {
        self.stats.inc_by(key, n);
    }

    /// The download slot of the request at hand.
    pub fn slot(&self) -> &str {
        self.slot
    }

    /// Whether the crawl is closing (a retry then would never be sent).
    pub fn is_closing(&self) -> bool {
        self.closing
    }

    /// Starts nothing more in this request's slot for `d` (other slots go on).
    /// Several pauses asked for at once combine to the longest.
    pub fn pause_slot(&mut self, d: Duration) {
        self.pause = Some(self.pause.map_or(d, |p| p.max(d)));
    }

    /// Whether a pause was asked for (a later middleware may not want to add its own).
    pub fn slot_paused(&self) -> bool {
        self.pause.is_some()
    }

    pub(crate) fn take_pause(&mut self) -> Option<Duration> {
        self.pause.take()
    }
}

/// A hook around the downloader. Every method defaults to doing nothing.
pub trait DownloaderMiddleware: Send {
    /// Prepares (or drops) a request just before it is sent.
    fn process_request(&mut self, request: &mut Request, cx: &mut Context<'_>) -> Action {
        let _ = (request, cx);
        Action::Continue
    }

    /// Looks at, changes or replaces a response (its request is
    /// `response.request`) before the spider gets it.
    fn process_response(&mut self, response: &mut Response, cx: &mut Context<'_>) -> Action {
        let _ = (response, cx);
        Action::Continue
    }

    /// Handles a download that failed (a retry, for example).
    fn process_exception(
        &mut self,
        request: &Request,
        error: &DownloadError,
        cx: &mut Context<'_>,
    ) -> Action {
        let _ = (request, error, cx);
        Action::Continue
    }
}

/// Runs one hook of each middleware in order until one decides something
/// other than [`Action::Continue`]; returns that decision and the slot pause
/// any of them asked for.
pub(crate) fn run_chain(
    middlewares: &mut [Box<dyn DownloaderMiddleware>],
    mut cx: Context<'_>,
    mut hook: impl FnMut(&mut dyn DownloaderMiddleware, &mut Context<'_>) -> Action,
) -> (Action, Option<Duration>) {
    let mut action = Action::Continue;
    for mw in middlewares {
        action = hook(mw.as_mut(), &mut cx);
        if action != Action::Continue {
            break;
        }
    }
    (action, cx.take_pause())
}
