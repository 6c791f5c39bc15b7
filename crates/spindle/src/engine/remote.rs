//! Multi-process mode: results and deaths reported by worker processes,
//! fed into the same handling as in-process downloads.

use std::time::{Duration, Instant};

use http::header::{HeaderMap, HeaderName, HeaderValue};
use tracing::warn;

use super::*;
use crate::workers::protocol::{Fetched, FromWorker, ParsedPage};
use crate::workers::{JobState, MAX_CRASHES};

impl Engine {
    pub(super) fn on_fleet_event(&mut self, event: FleetEvent) {
        match event {
            FleetEvent::Message(msg) => match msg {
                FromWorker::Fetched { id, outcome } => self.on_remote_fetched(id, outcome),
                FromWorker::Parsed { id, result } => self.on_remote_parsed(id, result),
            },
            FleetEvent::Undecodable { error } => {
                warn!(%error, "a message from a worker process could not be decoded; replacing the worker");
                self.downloads
                    .stats
                    .inc("worker/message_decode_error_count");
            }
            FleetEvent::Gone { worker } => self.on_worker_gone(worker),
        }
    }

    fn on_remote_fetched(&mut self, id: u64, outcome: Fetched) {
        let parse_follows = matches!(
            outcome,
            Fetched::Response {
                parsed_by_worker: true,
                ..
            }
        );
        let Some(fleet) = self.downloads.fleet() else {
            return;
        };
        // A worker parses one page at a time; the bodies waiting for it count
        // in the same backlog that holds back new downloads in one process.
        let backlog = match &outcome {
            Fetched::Response { body_len, .. } if parse_follows => {
                Scraper::backlog_of(*body_len as usize)
            }
            _ => 0,
        };
        let Some((slot, request)) = fleet.fetched(id, parse_follows, backlog) else {
            return;
        };
        self.downloads.finished();
        self.left_wire(slot, request.is_robots(), Instant::now());
        match outcome {
            Fetched::Failed(error) => self.on_download_error(slot, request, error),
            Fetched::Response {
                status,
                headers,
                body,
                body_len,
                latency_us,
                headers_latency_us,
                ..
            } => {
                let response = Response {
                    url: request.url.clone(),
                    status,
                    headers: header_map(headers),
                    body: body.into(),
                    request,
                    latency: Duration::from_micros(latency_us),
                    headers_latency: Duration::from_micros(headers_latency_us),
                };
                let to_parse = self.on_response(slot, response, body_len).is_some();
                if parse_follows {
                    if to_parse {
                        self.scraper.started(backlog);
                    } else if let Some(fleet) = self.downloads.fleet() {
                        fleet.forget(id);
                    }
                }
            }
        }
    }

    fn on_remote_parsed(&mut self, id: u64, result: Result<ParsedPage, String>) {
        let Some((depth, backlog, job)) = self.downloads.fleet().and_then(|f| f.parsed(id)) else {
            return;
        };
        let output = result.map(|page| {
            for (key, n) in &page.stats {
                self.scraper.count(key, *n);
            }
            let mut items = Vec::with_capacity(page.items.len());
            for text in &page.items {
                match serde_json::from_str(text) {
                    Ok(item) => items.push(item),
                    Err(error) => {
                        // The worker serialized it, so this is a bug, not bad input: say so loudly.
                        warn!(%error, "an item from a worker process could not be decoded; dropped");
                        self.scraper.count("worker/item_decode_error_count", 1);
                    }
                }
            }
            Output {
                items,
                requests: page.requests,
                ..Output::default()
            }
        });
        match self.scraper.finished(backlog, output) {
            Some(output) => self.on_output(job, depth, output),
            None => self.page_done(job, false),
        }
    }

    /// A worker exited or died: its jobs are queued again (or given up), and it is replaced.
    fn on_worker_gone(&mut self, worker: usize) {
        let Some(fleet) = self.downloads.fleet() else {
            return;
        };
        let (jobs, culprit) = fleet.gone(worker);
        if self.closing.is_none() || !jobs.is_empty() {
            self.downloads.stats.inc("worker/died_count");
        }
        let now = Instant::now();
        for job in jobs {
            // A worker that died while parsing names its page; one that died
            // while downloading cannot say which job killed it, so all are charged.
            let charged = culprit.is_none_or(|id| id == job.id);
            self.requeue_after_crash(job, charged, now);
        }
        if self.closing.is_none() {
            let Some(fleet) = self.downloads.fleet() else {
                return;
            };
            if let Err(error) = fleet.replace(worker) {
                warn!(%error, "cannot start a replacement worker");
                if !fleet.has_workers() {
                    self.close("workers_failed");
                }
            }
        }
    }

    fn requeue_after_crash(&mut self, job: JobState, charged: bool, now: Instant) {
        let JobState {
            slot,
            mut request,
            parsing,
            backlog,
            ..
        } = job;
        if parsing {
            self.scraper.abandoned(backlog);
        } else {
            self.downloads.finished();
            self.left_wire(slot, request.is_robots(), now);
        }
        request.crashes += u32::from(charged);
        if request.crashes >= MAX_CRASHES {
            warn!(url = %request.url, crashes = request.crashes, "giving up: this page killed its workers");
            self.downloads.stats.inc("worker/gave_up_count");
            self.scheduler.done(&request, false);
            if let Some(origin) = request.robots_origin() {
                self.admission
                    .robots_given_up(origin, &mut self.scheduler, &self.events_tx);
            }
            return;
        }
        self.downloads.stats.inc("worker/requeued_count");
        let key = self.scheduler.slot_key(slot).to_string();
        self.scheduler.push(&key, request, now);
    }
}

fn header_map(pairs: Vec<(String, Vec<u8>)>) -> HeaderMap {
    let mut map = HeaderMap::with_capacity(pairs.len());
    for (name, value) in pairs {
        // The worker read these from a parsed response, so they are valid.
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_bytes(&value),
        ) {
            map.append(name, value);
        }
    }
    map
}
