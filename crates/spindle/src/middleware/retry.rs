//! Retries (`RETRY_ENABLED`, `RETRY_TIMES`, `RETRY_HTTP_CODES`), with the
//! per-slot backoff and `Retry-After` pauses Scrapy lacks.
//!
//! Scrapy retries at once, which hammers a site that is already failing.
//! Here each retry pauses its slot, and only its slot, for an exponential
//! backoff with jitter, or for as long as a 429/503 `Retry-After` asks.

use std::time::SystemTime;

use rand::rngs::SmallRng;
use rand::SeedableRng;
use tracing::{debug, info, warn};

use super::{Action, Context, DownloaderMiddleware};
use crate::downloader::DownloadError;
use crate::request::Request;
use crate::response::Response;
use crate::retry;
use crate::settings::Settings;

/// Retries failed downloads and retryable statuses, pausing the slot first.
pub struct Retry {
    settings: Settings,
    rng: SmallRng,
}

impl Retry {
    /// Retries as the `RETRY_*` settings say.
    pub fn new(settings: &Settings) -> Self {
        Retry {
            settings: settings.clone(),
            rng: SmallRng::from_entropy(),
        }
    }

    /// The request to send again, or `None` when retries are off or used up.
    fn again(&mut self, request: &Request, reason: &str, cx: &mut Context<'_>) -> Option<Request> {
        if !self.settings.retry_enabled || cx.is_closing() {
            return None;
        }
        if request.retries >= self.settings.retry_times {
            warn!(url = %request.url, retries = request.retries, reason, "gave up retrying");
            cx.inc_stat("retry/max_reached", 1);
            return None;
        }
        let mut again = request.clone();
        again.retries += 1;
        again.priority -= 1;
        cx.inc_stat("retry/count", 1);
        cx.inc_stat(&format!("retry/reason_count/{reason}"), 1);
        // A Retry-After pause already says when; otherwise back off.
        if !cx.slot_paused() {
            let pause = retry::backoff(&self.settings, again.retries, &mut self.rng);
            debug!(url = %request.url, ?pause, reason, "retrying after a pause of the slot");
            cx.pause_slot(pause);
        }
        Some(again)
    }
}

impl DownloaderMiddleware for Retry {
    fn process_response(&mut self, response: &mut Response, cx: &mut Context<'_>) -> Action {
        let status = response.status;
        // A 429 or 503 that says when to come back pauses its slot, retried or not.
        if let Some(wait) =
            retry::retry_after(status, &response.headers, &self.settings, SystemTime::now())
        {
            info!(
                slot = cx.slot(),
                ?wait,
                status,
                "Retry-After: pausing the slot"
            );
            cx.inc_stat("retry/retry_after_count", 1);
            cx.pause_slot(wait);
        }
        if self.settings.retry_http_codes.contains(&status) {
            if let Some(again) = self.again(&response.request, &status.to_string(), cx) {
                return Action::Retry(again);
            }
        }
        Action::Continue
    }

    fn process_exception(
        &mut self,
        request: &Request,
        error: &DownloadError,
        cx: &mut Context<'_>,
    ) -> Action {
        if error.is_retryable() {
            if let Some(again) = self.again(request, error.kind(), cx) {
                return Action::Retry(again);
            }
        }
        Action::Continue
    }
}
