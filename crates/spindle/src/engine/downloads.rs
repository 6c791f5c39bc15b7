//! The downloader part: where requests run (this process's HTTP client, or
//! worker processes), how many are on the wire, and the downloader's counters.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::Event;
use crate::downloader::slot::Pacing;
use crate::downloader::{DownloadError, Downloader};
use crate::request::Request;
use crate::response::Response;
use crate::scheduler::SlotId;
use crate::stats::Stats;
use crate::workers::Fleet;

/// Where downloads run.
pub(super) enum Executor {
    /// On this process's runtime, with one shared HTTP client.
    InProcess(Arc<Downloader>),
    /// In worker processes, which also parse what they fetch.
    Workers(Box<Fleet>),
}

/// Requests on the wire, under `CONCURRENT_REQUESTS`.
pub(super) struct Downloads {
    executor: Executor,
    /// `CONCURRENT_REQUESTS`; 0 is no limit.
    cap: usize,
    warnsize: u64,
    in_flight: usize,
    /// `DOWNLOAD_SLOW_AFTER`: a request waiting longer leaves the global count.
    slow_after: Duration,
    /// Requests that waited past `slow_after` and no longer count against the cap.
    released: HashSet<u64>,
    next_id: u64,
    /// Out of descriptors: nothing starts before this.
    hold_until: Option<Instant>,
    /// Out of descriptors: the requests on the wire (released ones included)
    /// are held under this, which each response raises by one until it is lifted.
    fd_cap: Option<usize>,
    pub(super) stats: Stats,
}

/// At most this many times `CONCURRENT_REQUESTS` requests may wait released
/// from the global cap: each still holds a socket and its slot's place.
pub(super) const RELEASED_PER_GLOBAL_SLOT: usize = 4;

/// A robots.txt fetch with no answer after this long is released from the
/// global cap even when `DOWNLOAD_SLOW_AFTER` is off. It is the first request
/// to every host, and in a broad crawl the dead hosts' robots.txt fetches
/// otherwise held the crawl's places for all their timeouts and retries
/// (40 of 64 places for 3 × 10 s: good hosts at 72% of their speed, with
/// 50 ms pages). Pages keep the exact `CONCURRENT_REQUESTS` by default.
pub(super) const ROBOTS_SLOW_AFTER: Duration = Duration::from_secs(1);

impl Downloads {
    pub(super) fn new(executor: Executor, cap: usize, warnsize: u64, slow_after: Duration) -> Self {
        Downloads {
            executor,
            cap,
            warnsize,
            in_flight: 0,
            slow_after,
            released: HashSet::new(),
            next_id: 0,
            hold_until: None,
            fd_cap: None,
            stats: Stats::default(),
        }
    }

    /// Whether the global cap is reached (Scrapy's `downloader.needs_backout()`),
    /// or starts are held while descriptors are short.
    pub(super) fn needs_backout(&self, now: Instant) -> bool {
        (self.cap != 0 && self.in_flight >= self.cap)
            || self.hold_until.is_some_and(|t| t > now)
            || self.fd_cap.is_some_and(|c| self.in_flight() >= c)
    }

    /// Descriptors ran out with this many requests on the wire: hold the
    /// count below it from now on, and raise it again as responses come in.
    pub(super) fn out_of_descriptors(&mut self) {
        let at = self.in_flight() + 1;
        let cap = (at - at / 8).max(1);
        self.fd_cap = Some(self.fd_cap.map_or(cap, |c| c.min(cap)));
    }

    /// A response came in: descriptors serve again, so allow one more on the wire.
    pub(super) fn descriptors_recovering(&mut self) {
        if let Some(c) = self.fd_cap {
            let limit = if self.cap == 0 { usize::MAX } else { self.cap };
            self.fd_cap = (c + 1 < limit).then_some(c + 1);
        }
    }

    /// When a hold for descriptors ends, if one is on.
    pub(super) fn hold_until(&self, now: Instant) -> Option<Instant> {
        self.hold_until.filter(|t| *t > now)
    }

    /// Holds every start until `until` (descriptors are short).
    pub(super) fn hold(&mut self, until: Instant) {
        self.hold_until = Some(self.hold_until.map_or(until, |t| t.max(until)));
    }

    /// Requests on the wire, those released from the global cap included.
    pub(super) fn in_flight(&self) -> usize {
        self.in_flight + self.released.len()
    }

    /// A request has waited `DOWNLOAD_SLOW_AFTER`: it leaves the global count,
    /// unless too many already have.
    pub(super) fn slow(&mut self, id: u64) {
        let room = self.cap == 0 || self.released.len() < self.cap * RELEASED_PER_GLOBAL_SLOT;
        if room && self.released.insert(id) {
            self.in_flight -= 1;
            self.stats.inc("downloader/slow_released_count");
        }
    }

    pub(super) fn fleet(&mut self) -> Option<&mut Fleet> {
        match &mut self.executor {
            Executor::Workers(fleet) => Some(fleet.as_mut()),
            Executor::InProcess(_) => None,
        }
    }

    pub(super) fn fleet_ref(&self) -> Option<&Fleet> {
        match &self.executor {
            Executor::Workers(fleet) => Some(fleet.as_ref()),
            Executor::InProcess(_) => None,
        }
    }

    /// Sends a request its slot let start. False when no worker process is
    /// left to take it (the request is then not counted as sent).
    pub(super) fn start(
        &mut self,
        slot: SlotId,
        request: Request,
        pacing: Pacing,
        events: &mpsc::UnboundedSender<Event>,
    ) -> bool {
        let method = request.method.clone();
        let slow_after = match (request.is_robots(), self.slow_after.is_zero()) {
            (true, true) => ROBOTS_SLOW_AFTER,
            (true, false) => self.slow_after.min(ROBOTS_SLOW_AFTER),
            (false, _) => self.slow_after,
        };
        self.next_id += 1;
        let id = self.next_id;
        match &mut self.executor {
            Executor::Workers(fleet) => {
                if !fleet.submit(slot, request, pacing) {
                    self.stats.inc("worker/no_worker_count");
                    return false;
                }
            }
            Executor::InProcess(downloader) => {
                let downloader = downloader.clone();
                let tx = events.clone();
                tokio::spawn(async move {
                    // The slot's gate holds the request's first write, at its socket.
                    let fetch = downloader.fetch(request, Some(pacing));
                    tokio::pin!(fetch);
                    let result = if slow_after.is_zero() {
                        fetch.await
                    } else {
                        tokio::select! {
                            result = &mut fetch => result,
                            _ = tokio::time::sleep(slow_after) => {
                                // It only waits now: a socket, not a share of the crawl.
                                let _ = tx.send(Event::Slow { id });
                                fetch.await
                            }
                        }
                    };
                    let _ = tx.send(Event::Downloaded {
                        slot,
                        id,
                        result: Box::new(result),
                    });
                });
            }
        }
        self.in_flight += 1;
        self.stats.inc("downloader/request_count");
        self.stats
            .inc(&format!("downloader/request_method_count/{method}"));
        true
    }

    /// A request left the wire, answered or not.
    pub(super) fn finished(&mut self) {
        self.in_flight -= 1;
    }

    /// An in-process request (`id` from [`Downloads::start`]) left the wire.
    pub(super) fn finished_local(&mut self, id: u64) {
        if !self.released.remove(&id) {
            self.in_flight -= 1;
        }
    }

    /// Counts a response; `body_len` is its size where it was downloaded.
    pub(super) fn count_response(&mut self, response: &Response, body_len: u64) {
        let status = response.status;
        self.stats.inc("downloader/response_count");
        self.stats
            .inc(&format!("downloader/response_status_count/{status}"));
        self.stats.inc_by("downloader/response_bytes", body_len);
        self.stats.inc("response_received_count");
        debug!(url = %response.url, status, "crawled");
        if self.warnsize > 0 && body_len > self.warnsize {
            warn!(url = %response.url, bytes = body_len, "body larger than DOWNLOAD_WARNSIZE");
            self.stats.inc("downloader/warnsize_count");
        }
    }

    /// Counts `n` downloads that failed with `kind` (see [`DownloadError::kind`]).
    pub(super) fn count_errors(&mut self, kind: &str, n: u64) {
        self.stats.inc_by("downloader/exception_count", n);
        self.stats
            .inc_by(&format!("downloader/exception_type_count/{kind}"), n);
    }

    pub(super) fn count_error(&mut self, error: &DownloadError) {
        self.count_errors(error.kind(), 1);
    }
}
