//! Broad-crawl health: slots that keep failing, descriptors that run short,
//! and slots that went idle.
//!
//! - A slot whose downloads time out or cannot connect has its concurrency
//!   cut to 1 at the first such failure (lifted again by its next response),
//!   and is given up when the failures since its last response reach
//!   `SLOT_MAX_EXCEPTIONS` (Nutch's `fetcher.max.exceptions.per.queue`). Its
//!   queued requests, and any that arrive later, are dropped and counted
//!   (`slot/given_up_count`, `slot/given_up_requests`).
//! - A download that failed because this process is out of file descriptors
//!   (EMFILE/ENFILE in connect or DNS) is the crawler's fault, not the
//!   site's: it is not counted as a download error, not passed to the
//!   middlewares (so not retried, and a robots.txt is not "unreachable"),
//!   but queued again in its slot (`downloader/fd_wait_count`). Every start
//!   holds off for a short, growing pause, and the requests on the wire are
//!   then held under 7/8 of what they were when descriptors ran out, a cap
//!   each response raises by one until it reaches `CONCURRENT_REQUESTS`
//!   again. A request still failing so [`FD_WAIT_MAX`] after its first
//!   wait is given up, logged and counted
//!   (`downloader/fd_gave_up_count`).
//! - Every `SLOT_GC_INTERVAL` the slots with nothing queued or on the wire,
//!   idle for that long past their delay, are dropped (Scrapy's slot GC).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::*;

/// How long one request may keep waiting for descriptors before it is given up.
pub(super) const FD_WAIT_MAX: Duration = Duration::from_secs(60);
/// The first pause of all starts when descriptors run short; it doubles up to [`FD_HOLD_MAX`].
const FD_HOLD_MIN: Duration = Duration::from_millis(25);
const FD_HOLD_MAX: Duration = Duration::from_millis(500);

/// The state behind the rules above.
#[derive(Default)]
pub(super) struct Health {
    /// Timeouts and connection failures since each failing slot's last response.
    failures: HashMap<String, u32>,
    /// When each request (by fingerprint) first waited for descriptors, while it waits.
    fd_waits: HashMap<u64, Instant>,
    /// Descriptor shortages in a row, for the hold's length.
    fd_streak: u32,
    /// `slot/given_up_count`, `slot/given_up_requests`, `scheduler/slots_dropped`.
    pub(super) stats: Stats,
}

impl Engine {
    /// A download of this slot got a response: the slot is healthy again.
    pub(super) fn slot_answered(&mut self, slot: SlotId) {
        self.health.fd_streak = 0;
        self.downloads.descriptors_recovering();
        if self.health.failures.is_empty() {
            return;
        }
        let key = self.scheduler.slot_key(slot);
        if self.health.failures.remove(key).is_some() {
            self.scheduler.limit_concurrency(slot, None, Instant::now());
        }
    }

    /// A download of this slot timed out or could not connect. True when the
    /// slot is given up (now or before); the request is then dropped and counted.
    pub(super) fn slot_failed(&mut self, slot: SlotId, request: &Request) -> bool {
        let now = Instant::now();
        let key = self.scheduler.slot_key(slot).to_string();
        if self.scheduler.is_given_up(&key) {
            self.drop_given_up(request);
            return true;
        }
        let failures = self.health.failures.entry(key.clone()).or_insert(0);
        *failures += 1;
        let failures = *failures;
        if failures == 1 {
            self.scheduler.limit_concurrency(slot, Some(1), now);
        }
        let max = self.settings.slot_max_exceptions;
        if max == 0 || failures < max {
            return false;
        }
        self.health.failures.remove(&key);
        let dropped = self.scheduler.give_up(slot, now);
        warn!(
            slot = %key,
            failures,
            queued = dropped.len(),
            "giving up this slot (SLOT_MAX_EXCEPTIONS)"
        );
        self.health.stats.inc("slot/given_up_count");
        self.drop_given_up(request);
        for request in dropped {
            self.drop_given_up(&request);
        }
        true
    }

    /// Counts a request of a given-up slot as dropped, with the pages that
    /// waited for it if it was a robots.txt.
    pub(super) fn drop_given_up(&mut self, request: &Request) {
        self.health.stats.inc("slot/given_up_requests");
        if let Some(origin) = request.robots_origin() {
            let waiting = self.admission.robots_abandoned(origin);
            self.health.stats.inc_by("slot/given_up_requests", waiting);
        }
    }

    /// The download failed for lack of descriptors: queue it again and hold
    /// every start for a while, or give it up after [`FD_WAIT_MAX`].
    pub(super) fn wait_for_descriptors(
        &mut self,
        slot: SlotId,
        request: Request,
        error: &DownloadError,
    ) {
        let now = Instant::now();
        let fp = request.fingerprint();
        let first = *self.health.fd_waits.entry(fp).or_insert(now);
        let waited = now.duration_since(first);
        self.health.fd_streak = self.health.fd_streak.saturating_add(1);
        let hold = FD_HOLD_MIN
            .saturating_mul(1 << self.health.fd_streak.min(8))
            .min(FD_HOLD_MAX);
        self.downloads.hold(now + hold);
        self.downloads.out_of_descriptors();
        if waited > FD_WAIT_MAX {
            self.health.fd_waits.remove(&fp);
            warn!(url = %request.url, %error, ?waited, "giving up: out of file descriptors");
            self.downloads.stats.inc("downloader/fd_gave_up_count");
            if let Some(origin) = request.robots_origin() {
                let waiting = self.admission.robots_abandoned(origin);
                self.downloads
                    .stats
                    .inc_by("downloader/fd_gave_up_count", waiting);
            }
            return;
        }
        if waited.is_zero() {
            info!(url = %request.url, ?hold, "out of file descriptors: waiting, then trying again");
        }
        self.downloads.stats.inc("downloader/fd_wait_count");
        let key = self.scheduler.slot_key(slot).to_string();
        self.scheduler.push(&key, request, now);
    }

    /// A request left the wire for good (answered, or failed otherwise).
    pub(super) fn forget_fd_waits(&mut self, request: &Request) {
        if !self.health.fd_waits.is_empty() {
            self.health.fd_waits.remove(&request.fingerprint());
        }
    }

    /// Drops idle slots (Scrapy's slot GC).
    pub(super) fn gc_slots(&mut self) {
        let top = if self.settings.stats_slots_all {
            usize::MAX
        } else {
            self.settings.stats_slots_top
        };
        let dropped = self
            .scheduler
            .gc(Instant::now(), self.settings.slot_gc_interval, top);
        if dropped > 0 {
            self.health
                .stats
                .inc_by("scheduler/slots_dropped", dropped as u64);
            self.scheduler.shrink();
            give_back_freed_memory();
        }
    }
}

/// Returns freed heap pages to the system (glibc keeps them otherwise), so
/// the memory of dropped slots and closed connections shows up as gone.
fn give_back_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory; it has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}
