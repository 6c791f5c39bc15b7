//! Feeds the `--report` recorder from the engine's parts.

use std::time::Instant;

use super::*;
use crate::report::{CrawlState, Knobs, Recorder};

pub(super) fn recorder(path: std::path::PathBuf, settings: &Settings) -> Recorder {
    Recorder::new(
        path,
        Knobs {
            concurrent_requests: settings.concurrent_requests,
            per_slot: settings.default_slot_concurrency(),
            per_ip: settings.concurrent_requests_per_ip > 0,
            download_delay: settings.download_delay,
            autothrottle: settings
                .autothrottle_enabled
                .then_some(settings.autothrottle_mode),
            target_concurrency: settings.autothrottle_target_concurrency,
        },
    )
}

impl Engine {
    /// When the report wants its next snapshot, if there is a report.
    pub(super) fn report_due(&self) -> Option<Instant> {
        self.report.as_ref().map(Recorder::next_sample)
    }

    /// Takes a snapshot of every part for the report.
    pub(super) fn report_sample(&mut self) {
        let Some(report) = self.report.as_mut() else {
            return;
        };
        let now = Instant::now();
        let crawl = CrawlState {
            pages: self.downloads.stats.get("response_received_count"),
            in_flight: self.downloads.in_flight(),
            queued: self.scheduler.len(),
            global_full: self.downloads.needs_backout(std::time::Instant::now()),
            parse_full: self.scraper.needs_backout(),
            admission_waiting: self.admission.is_waiting(),
            downloads: &self.downloads.stats,
            middlewares: &self.mw_stats,
        };
        let scheduler = &self.scheduler;
        report.sample(
            now,
            crawl,
            scheduler
                .slot_ids()
                .map(|(id, key)| (id, key, scheduler.pace(id, now))),
        );
    }

    /// Records a response's latency for the report. Call after its slot counted it finished.
    pub(super) fn report_response(&mut self, slot: SlotId, response: &Response) {
        if let Some(report) = self.report.as_mut() {
            let active = self.scheduler.pace(slot, Instant::now()).active;
            report.response(
                slot,
                self.scheduler.slot_key(slot),
                response.status,
                response.headers_latency,
                active + 1,
            );
        }
    }
}
