//! `DEFAULT_REQUEST_HEADERS`.

use http::header::HeaderMap;

use super::{Action, Context, DownloaderMiddleware};
use crate::request::Request;

/// `DEFAULT_REQUEST_HEADERS`: headers every request gets unless it sets its own.
pub struct DefaultHeaders {
    headers: HeaderMap,
}

impl DefaultHeaders {
    /// Adds these headers to requests that lack them.
    pub fn new(headers: HeaderMap) -> Self {
        DefaultHeaders { headers }
    }
}

impl DownloaderMiddleware for DefaultHeaders {
    fn process_request(&mut self, request: &mut Request, _: &mut Context<'_>) -> Action {
        for (name, value) in &self.headers {
            if !request.headers.contains_key(name) {
                request.headers.insert(name.clone(), value.clone());
            }
        }
        Action::Continue
    }
}
