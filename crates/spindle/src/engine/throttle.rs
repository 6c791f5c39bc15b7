//! AutoThrottle, as an engine part: after each response it moves its slot's
//! delay (Scrapy's algorithm) or, in adaptive mode, its concurrency. The
//! arithmetic is in `crate::throttle`; the only way this part changes a slot
//! is [`Scheduler::set_delay`] and [`Scheduler::set_limit`], and the slot
//! keeps both within their bounds (the `DOWNLOAD_DELAY`/`Crawl-delay` floor,
//! 1 and the per-slot cap).

use std::time::{Duration, Instant};

use tracing::info;

use crate::downloader::DownloadError;
use crate::response::Response;
use crate::scheduler::{Scheduler, SlotId};
use crate::settings::{Settings, ThrottleMode};
use crate::stats::Stats;
use crate::throttle::{is_overload, AdaptiveLimit, DelayRule};

pub(super) struct Throttle {
    mode: Option<ThrottleMode>,
    rule: DelayRule,
    debug: bool,
    /// Adaptive mode's state, by slot id.
    adaptive: Vec<Option<AdaptiveLimit>>,
    /// `autothrottle/...` counters.
    pub(super) stats: Stats,
}

impl Throttle {
    pub(super) fn new(settings: &Settings) -> Self {
        Throttle {
            mode: settings
                .autothrottle_enabled
                .then_some(settings.autothrottle_mode),
            rule: DelayRule {
                target_concurrency: settings.autothrottle_target_concurrency,
                max_delay: settings.autothrottle_max_delay,
            },
            debug: settings.autothrottle_debug,
            adaptive: Vec::new(),
            stats: Stats::default(),
        }
    }

    /// Adjusts the response's slot. Call after the slot counted the request as finished.
    pub(super) fn on_response(
        &mut self,
        slot: SlotId,
        response: &Response,
        body_len: u64,
        scheduler: &mut Scheduler,
    ) {
        let Some(mode) = self.mode else { return };
        let now = Instant::now();
        let pace = scheduler.pace(slot, now);
        let status = response.status;
        let latency = response.headers_latency;
        if is_overload(status) {
            self.stats.inc("autothrottle/overload_count");
        }
        match mode {
            ThrottleMode::Delay => {
                let next = self
                    .rule
                    .next_delay(pace.delay, pace.min_delay, latency, status);
                if next != pace.delay {
                    scheduler.set_delay(slot, next, now);
                }
                if self.debug {
                    let new = scheduler.pace(slot, now).delay;
                    let diff = new.as_secs_f64() * 1e3 - pace.delay.as_secs_f64() * 1e3;
                    info!(
                        "slot: {} | conc:{:2} | delay:{:5.0} ms ({:+.0}) | latency:{:5.0} ms | size:{:6} bytes",
                        scheduler.slot_key(slot),
                        pace.active + 1,
                        new.as_secs_f64() * 1e3,
                        diff,
                        latency.as_secs_f64() * 1e3,
                        body_len
                    );
                }
            }
            ThrottleMode::Adaptive => {
                let limit = self.limit(slot, pace.cap);
                if let Some(n) = limit.on_response(latency, status, pace.active + 1) {
                    self.set_limit(slot, n, pace.limit, latency, scheduler, now);
                }
            }
        }
    }

    /// A download failed: in adaptive mode, network trouble halves the slot's concurrency.
    pub(super) fn on_error(
        &mut self,
        slot: SlotId,
        error: &DownloadError,
        scheduler: &mut Scheduler,
    ) {
        if self.mode != Some(ThrottleMode::Adaptive) || !error.is_retryable() {
            return;
        }
        let now = Instant::now();
        let pace = scheduler.pace(slot, now);
        if let Some(n) = self.limit(slot, pace.cap).on_error() {
            self.set_limit(slot, n, pace.limit, Duration::ZERO, scheduler, now);
        }
    }

    fn limit(&mut self, slot: SlotId, cap: usize) -> &mut AdaptiveLimit {
        if self.adaptive.len() <= slot {
            self.adaptive.resize(slot + 1, None);
        }
        self.adaptive[slot].get_or_insert_with(|| AdaptiveLimit::new(cap))
    }

    fn set_limit(
        &mut self,
        slot: SlotId,
        n: usize,
        old: usize,
        latency: Duration,
        scheduler: &mut Scheduler,
        now: Instant,
    ) {
        scheduler.set_limit(slot, n, now);
        self.stats.inc(if n > old {
            "autothrottle/limit_raised_count"
        } else {
            "autothrottle/limit_lowered_count"
        });
        if self.debug {
            info!(
                "slot: {} | concurrency {} -> {} | latency:{:5.0} ms",
                scheduler.slot_key(slot),
                old,
                n,
                latency.as_secs_f64() * 1e3
            );
        }
    }
}
