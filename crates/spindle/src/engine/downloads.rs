//! The downloader part: where requests run (this process's HTTP client, or
//! worker processes), how many are on the wire, and the downloader's counters.

use std::sync::Arc;

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
    pub(super) stats: Stats,
}

impl Downloads {
    pub(super) fn new(executor: Executor, cap: usize, warnsize: u64) -> Self {
        Downloads {
            executor,
            cap,
            warnsize,
            in_flight: 0,
            stats: Stats::default(),
        }
    }

    /// Whether the global cap is reached (Scrapy's `downloader.needs_backout()`).
    pub(super) fn needs_backout(&self) -> bool {
        self.cap != 0 && self.in_flight >= self.cap
    }

    pub(super) fn in_flight(&self) -> usize {
        self.in_flight
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
                    pacing.pass().await;
                    let result = downloader.fetch(request).await;
                    let _ = tx.send(Event::Downloaded {
                        slot,
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
