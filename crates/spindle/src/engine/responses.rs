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
        let id = response.request.job;
        if id != 0 {
            // What `count_response` counted, charged to the job's request (see `Scheduler::charge`).
            let status = format!("downloader/response_status_count/{}", response.status);
            for (key, n) in [
                ("downloader/response_count", 1),
                (status.as_str(), 1),
                ("downloader/response_bytes", body_len),
                ("response_received_count", 1),
            ] {
                self.scheduler.charge(id, key, n);
            }
        }
        self.throttle
            .on_response(slot, &response, body_len, &mut self.scheduler);
        self.report_response(slot, &response);
        self.slot_answered(slot);
        self.forget_fd_waits(&response.request);
        // Pages, as Scrapy counts them: robots.txt is fetched by the engine, not asked for.
        if response.request.robots_origin().is_none() {
            self.pages_received += 1;
            let pagecount = self.settings.closespider_pagecount;
            if pagecount > 0 && self.pages_received >= pagecount {
                self.close("closespider_pagecount");
            }
        }
        let action = self.run_middlewares(slot, |mw, cx| mw.process_response(&mut response, cx));
        if self.act(slot, &response.request, action) {
            return None;
        }
        if let Some(origin) = response.request.robots_origin() {
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
        if matches!(error, DownloadError::LocalResources(_)) {
            // Our trouble, not the site's: no error, no retry, no verdict on robots.txt.
            self.wait_for_descriptors(slot, request, &error);
            return;
        }
        self.forget_fd_waits(&request);
        self.downloads.count_error(&error);
        self.throttle.on_error(slot, &error, &mut self.scheduler);
        self.scheduler.count_error(slot);
        if error.is_site_failure() && self.slot_failed(slot, &request) {
            return;
        }
        let action =
            self.run_middlewares(slot, |mw, cx| mw.process_exception(&request, &error, cx));
        if matches!(action, Action::Retry(_) | Action::Follow(_)) {
            self.act(slot, &request, action);
            return;
        }
        warn!(url = %request.url, %error, "download failed");
        self.scheduler.done(&request, false);
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
    pub(super) fn run_middlewares(
        &mut self,
        slot: SlotId,
        hook: impl FnMut(&mut dyn DownloaderMiddleware, &mut middleware::Context<'_>) -> Action,
    ) -> Action {
        let cx = middleware::Context::new(
            &mut self.mw_stats,
            self.scheduler.slot_key(slot),
            self.closing.is_some(),
        );
        let (action, pause) = middleware::run_chain(&mut self.middlewares, cx, hook);
        if let Some(pause) = pause {
            let now = Instant::now();
            self.scheduler.pause(slot, now + pause, now);
        }
        action
    }

    /// Carries out a middleware's decision; true when the response or
    /// failure was taken care of by it.
    pub(super) fn act(&mut self, slot: SlotId, request: &Request, action: Action) -> bool {
        match action {
            Action::Continue => false,
            Action::Drop => {
                self.scheduler.done(request, false);
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
                if self.scheduler.is_given_up(&key) {
                    self.drop_given_up(&again);
                } else {
                    self.scheduler.push(&key, again, Instant::now());
                }
                true
            }
            Action::Follow(next) => {
                // The redirect is a new request; the one redirected is done
                // once the new one is recorded.
                self.admit(next, Source::Redirect);
                self.scheduler.done(request, false);
                true
            }
        }
    }

    /// A page's output: its items, then the requests it led to, then (with
    /// a job) its completion, in that order, so the job never records a page
    /// done before what it produced.
    pub(super) fn on_output(
        &mut self,
        job: Option<crate::scheduler::JobRef>,
        parent_depth: u32,
        output: Output,
    ) {
        for item in output.items {
            if !self.items.send(item) && !self.export_failed {
                self.export_failed = true;
                self.close("export_error");
            }
        }
        // A closing crawl starts nothing new, but a job still records the
        // links, for the run that resumes it.
        if self.closing.is_none() || job.is_some() {
            for request in output.requests {
                self.admit(request, Source::Page { parent_depth });
            }
        }
        self.page_done(job, true);
    }

    /// Tells the job a page is done.
    pub(super) fn page_done(&mut self, job: Option<crate::scheduler::JobRef>, parsed: bool) {
        if let Some((queue, id)) = job {
            self.scheduler.done_id(queue, id, parsed);
        }
    }
}
