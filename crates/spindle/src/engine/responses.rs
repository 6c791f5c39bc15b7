//! What comes back from a download: the middlewares' decision (retry,
//! redirect, drop), robots.txt answers, and the spider's output.

use std::time::Instant;

use tracing::warn;

use super::*;
use crate::middleware::Action;

impl Engine {
    /// Runs a response through the middlewares and acts on their decision.
    /// Returns it when it is a page for the spider to parse. `body_len` is the
    /// body's size where it was downloaded (a worker process keeps page
    /// bodies and parses them itself).
    pub(super) fn on_response(
        &mut self,
        slot: SlotId,
        mut response: Response,
        body_len: u64,
    ) -> Option<Response> {
        self.downloads.count_response(&response, body_len);
        // Pages, as Scrapy counts them: robots.txt is fetched by the engine, not asked for.
        if response.request.robots_origin().is_none() {
            self.pages_received += 1;
            let pagecount = self.settings.closespider_pagecount;
            if pagecount > 0 && self.pages_received >= pagecount {
                self.close("closespider_pagecount");
            }
        }
        let request = response.request.clone();
        let action = self.run_middlewares(slot, |mw, cx| {
            mw.process_response(&request, &mut response, cx)
        });
        if self.act(slot, &request, action) {
            return None;
        }
        if let Some(origin) = request.robots_origin() {
            self.admission.robots_answered(
                origin,
                response.status,
                &response.body,
                &mut self.scheduler,
                &self.events_tx,
            );
            return None;
        }
        Some(response)
    }

    pub(super) fn on_download_error(
        &mut self,
        slot: SlotId,
        request: Request,
        error: DownloadError,
    ) {
        self.downloads.count_error(&error);
        let action =
            self.run_middlewares(slot, |mw, cx| mw.process_exception(&request, &error, cx));
        if matches!(action, Action::Retry(_) | Action::Follow(_)) {
            self.act(slot, &request, action);
            return;
        }
        warn!(url = %request.url, %error, "download failed");
        if let Some(origin) = request.robots_origin() {
            // RFC 9309: an unreachable robots.txt means complete disallow.
            self.admission.robots_unreachable(
                origin,
                &error.to_string(),
                &mut self.scheduler,
                &self.events_tx,
            );
        }
    }

    /// Runs one hook of each middleware in order until one decides; applies
    /// any slot pause they asked for.
    fn run_middlewares(
        &mut self,
        slot: SlotId,
        mut hook: impl FnMut(&mut dyn DownloaderMiddleware, &mut middleware::Context<'_>) -> Action,
    ) -> Action {
        let key = self.scheduler.slot_key(slot).to_string();
        let mut cx = middleware::Context::new(&mut self.mw_stats, &key, self.closing.is_some());
        let mut action = Action::Continue;
        for mw in &mut self.middlewares {
            action = hook(mw.as_mut(), &mut cx);
            if action != Action::Continue {
                break;
            }
        }
        if let Some(pause) = cx.take_pause() {
            let now = Instant::now();
            self.scheduler.pause(slot, now + pause, now);
        }
        action
    }

    /// Carries out a middleware's decision; true when the response or
    /// failure was taken care of by it.
    fn act(&mut self, slot: SlotId, request: &Request, action: Action) -> bool {
        match action {
            Action::Continue => false,
            Action::Drop => {
                if let Some(origin) = request.robots_origin() {
                    self.admission
                        .robots_missing(origin, &mut self.scheduler, &self.events_tx);
                }
                true
            }
            Action::Retry(again) => {
                // Straight back into its slot: a retry is not a new request
                // for the duplicate filter or robots.txt.
                let key = self.scheduler.slot_key(slot).to_string();
                self.scheduler.push(&key, again, Instant::now());
                true
            }
            Action::Follow(next) => {
                self.admit(next, Source::Redirect);
                true
            }
        }
    }

    pub(super) fn on_output(&mut self, parent_depth: u32, output: Output) {
        for item in output.items {
            if !self.items.send(item) && !self.export_failed {
                self.export_failed = true;
                self.close("export_error");
            }
        }
        if self.closing.is_some() {
            return;
        }
        for request in output.requests {
            self.admit(request, Source::Page { parent_depth });
        }
    }
}
