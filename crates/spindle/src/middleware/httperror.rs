//! Non-2xx pages are not parsed (Scrapy's `HttpErrorMiddleware`).

use super::{Action, Context, DownloaderMiddleware};
use crate::response::Response;

/// Drops responses whose status is not 2xx, counting each status.
#[derive(Default)]
pub struct HttpError;

impl DownloaderMiddleware for HttpError {
    fn process_response(&mut self, response: &mut Response, cx: &mut Context<'_>) -> Action {
        // robots.txt answers of any status mean something (RFC 9309); the engine reads them.
        if (200..300).contains(&response.status) || response.request.is_robots() {
            return Action::Continue;
        }
        cx.inc_stat("httperror/response_ignored_count", 1);
        cx.inc_stat(
            &format!(
                "httperror/response_ignored_status_count/{}",
                response.status
            ),
            1,
        );
        Action::Drop
    }
}
