//! The event loop: dispatching what may start, and handling what comes back.

use std::time::{Duration, Instant};

use tracing::info;

use super::*;
use crate::scheduler::Dispatch;

/// How often, at most, the engine sends a job its counters (see [`Engine::send_job_stats`]).
const JOB_STATS_EVERY: Duration = Duration::from_millis(20);

/// When the engine last sent a job its counters, and whether records came since.
pub(super) struct JobStatsClock {
    pub(super) last: Instant,
    pub(super) pending: bool,
}

impl Engine {
    pub(super) async fn run(
        &mut self,
        mut events: mpsc::UnboundedReceiver<Event>,
        shutdown: ShutdownHandle,
    ) -> String {
        info!(spider = self.spider.name(), "spider opened");
        for request in std::mem::take(&mut self.resume) {
            self.admit(request, Source::Resume);
        }
        self.scheduler.count_duplicates(!self.resumed);
        for request in self.spider.start_requests() {
            self.admit(request, Source::Start);
        }
        self.scheduler.count_duplicates(true);
        let interval = self.settings.logstats_interval;
        let mut logstats = (!interval.is_zero()).then(|| {
            let mut t = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            t
        });
        let mut last_logged = (0u64, 0u64);
        let mut memcheck = self.memusage.start(&self.settings);
        let timeout = self.settings.closespider_timeout;
        let close_timer = tokio::time::sleep(if timeout.is_zero() {
            Duration::MAX / 4
        } else {
            timeout
        });
        tokio::pin!(close_timer);
        let gc_every = self.settings.slot_gc_interval;
        let mut slot_gc =
            tokio::time::interval_at(tokio::time::Instant::now() + gc_every, gc_every);
        slot_gc.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

        loop {
            self.dispatch();
            let now = Instant::now();
            self.send_job_stats(Some(now));
            self.publish_progress();
            if self.is_done() {
                break;
            }
            let mut wakeup = [
                self.scheduler.next_wakeup(),
                self.downloads.hold_until(now),
                self.job_stats
                    .pending
                    .then_some(self.job_stats.last + JOB_STATS_EVERY),
            ]
            .into_iter()
            .flatten()
            .min();
            if self.items.needs_backout() {
                // The job's store is behind: look again soon, events or not.
                wakeup = Some(now + Duration::from_millis(10));
            }
            let wakeup = wakeup.map(tokio::time::Instant::from_std);
            let report_due = self.report_due().map(tokio::time::Instant::from_std);
            tokio::select! {
                Some(event) = events.recv() => {
                    self.handle(event);
                    while let Ok(event) = events.try_recv() {
                        self.handle(event);
                    }
                    self.close_on_counts();
                }
                _ = sleep_until_opt(wakeup), if wakeup.is_some() && self.closing.is_none() => {}
                _ = sleep_until_opt(report_due), if report_due.is_some() => {
                    self.report_sample();
                }
                _ = slot_gc.tick() => self.gc_slots(),
                _ = tick_opt(&mut logstats) => {
                    last_logged = self.log_stats(last_logged, interval);
                }
                _ = tick_opt(&mut memcheck) => {
                    if self.memusage.check(&self.settings) {
                        self.close("memusage_exceeded");
                    }
                }
                _ = &mut close_timer, if !timeout.is_zero() && self.closing.is_none() => {
                    self.close("closespider_timeout");
                }
                _ = shutdown.0.notified(), if self.closing.is_none() => {
                    info!("received shutdown: finishing the requests in flight");
                    self.close("shutdown");
                }
            }
        }
        let reason = self
            .closing
            .take()
            .unwrap_or_else(|| "finished".to_string());
        info!(reason = %reason, "spider closed");
        reason
    }

    /// With a job, after job records were sent: the counters as of now, to
    /// be committed with those records. They leave out what the requests not
    /// yet done added (a resumed run fetches those again), and the counters
    /// of one run only; the item thread adds its own.
    pub(super) fn send_job_stats(&mut self, now: Option<Instant>) {
        self.job_stats.pending |= self.items.job_ops_sent();
        if !self.job_stats.pending {
            return;
        }
        if let Some(now) = now {
            // Not after every batch of events: a snapshot merges every part's
            // counters, and on the Rust docs one per batch cost more CPU than
            // the store did. A commit waits this much longer at most.
            if now < self.job_stats.last + JOB_STATS_EVERY {
                return;
            }
            self.job_stats.last = now;
        }
        self.job_stats.pending = false;
        let mut stats = self.counters();
        stats.subtract(&self.scheduler.open_charges());
        self.items.send_job_stats(stats);
    }

    /// The counters every part kept, summed, carried on from a resumed job's
    /// earlier runs. Memory usage and the item thread's figures are not
    /// among them: the report adds those at the end.
    pub(super) fn counters(&self) -> Stats {
        let mut stats = Stats::default();
        stats.add_job(&self.job_base);
        for part in [
            &self.scheduler.stats,
            &self.downloads.stats,
            &self.scraper.stats,
            &self.throttle.stats,
            &self.admission.stats,
            &self.mw_stats,
            &self.health.stats,
        ] {
            stats.merge(part);
        }
        stats
    }

    pub(super) fn is_done(&self) -> bool {
        let busy = self.downloads.in_flight() > 0 || !self.scraper.is_idle();
        if self.closing.is_some() {
            return !busy;
        }
        !busy && self.scheduler.is_empty() && !self.admission.is_waiting()
    }

    /// `CLOSESPIDER_ITEMCOUNT` and `CLOSESPIDER_ERRORCOUNT`, checked after each batch of events.
    fn close_on_counts(&mut self) {
        let items = self.settings.closespider_itemcount;
        if items > 0 && Progress::get(&self.progress.items) >= items {
            self.close("closespider_itemcount");
        }
        let errors = self.settings.closespider_errorcount;
        if errors > 0 && self.scraper.stats.get("spider_exceptions/count") >= errors {
            self.close("closespider_errorcount");
        }
    }

    pub(super) fn close(&mut self, reason: &str) {
        if self.closing.is_none() {
            info!(reason, "closing spider");
            self.closing = Some(reason.to_string());
        }
    }

    /// Starts every request the caps, delays and parse backlog allow right now.
    pub(super) fn dispatch(&mut self) {
        if self.closing.is_some() {
            return;
        }
        let now = Instant::now();
        while !self.downloads.needs_backout(now)
            && !self.scraper.needs_backout()
            && !self.items.needs_backout()
        {
            let Some(Dispatch {
                slot,
                request,
                pacing,
            }) = self.scheduler.pop(now)
            else {
                break;
            };
            // Only a job's requests need their reference kept (and a String made).
            let job = (request.job != 0).then(|| (request.queue_key(), request.job));
            let robots = request.is_robots();
            let Some(mut request) = self.prepare(slot, request) else {
                self.left_wire(slot, robots, now);
                self.page_done(job, false);
                continue;
            };
            self.keep_alive_or_close(slot, &mut request);
            // What `Downloads::start` counts, charged to a job's request (see `Scheduler::charge`).
            let charge = (request.job != 0).then(|| {
                let method = format!("downloader/request_method_count/{}", request.method);
                (request.job, method)
            });
            if !self.downloads.start(slot, request, pacing, &self.events_tx) {
                self.left_wire(slot, robots, now);
                self.close("workers_failed");
                return;
            }
            if let Some((id, method)) = charge {
                self.scheduler.charge(id, "downloader/request_count", 1);
                self.scheduler.charge(id, &method, 1);
            }
        }
    }

    /// A request the scheduler gave is no longer on the wire (or never got there).
    pub(super) fn left_wire(&mut self, slot: SlotId, robots: bool, now: Instant) {
        self.scheduler.finish(slot, now);
        if robots {
            self.scheduler.robots_finished();
        }
    }

    /// In a broad crawl (more than [`KEEP_ALIVE_SLOTS`] slots), a request
    /// whose connection no other request of its slot is expected to reuse
    /// asks the server to close it after answering (see
    /// `Scheduler::expects_reuse`): no idle connection, so no descriptor and
    /// no buffers, is kept for a host with no work waiting. The idle
    /// connections are then bounded by the slots whose queued requests wait
    /// (each up to its concurrency), for at most `POOL_IDLE_TIMEOUT`.
    fn keep_alive_or_close(&mut self, slot: SlotId, request: &mut Request) {
        if self.scheduler.slot_count() > KEEP_ALIVE_SLOTS
            && !self.scheduler.expects_reuse(slot)
            && !request.headers.contains_key(http::header::CONNECTION)
        {
            request.headers.insert(
                http::header::CONNECTION,
                http::header::HeaderValue::from_static("close"),
            );
        }
    }

    /// Passes a request through the downloader middlewares; `None` when one dropped it.
    fn prepare(&mut self, slot: SlotId, mut request: Request) -> Option<Request> {
        let action = self.run_middlewares(slot, |mw, cx| mw.process_request(&mut request, cx));
        if action == middleware::Action::Continue {
            return Some(request);
        }
        self.act(slot, &request, action);
        None
    }

    /// Admits a request through the admission part into the scheduler.
    pub(super) fn admit(&mut self, request: Request, source: Source) {
        self.admission
            .admit(request, source, &mut self.scheduler, &self.events_tx);
    }

    pub(super) fn handle(&mut self, event: Event) {
        match event {
            Event::Slow { id } => self.downloads.slow(id),
            Event::Downloaded { slot, id, result } => {
                self.downloads.finished_local(id);
                let robots = match &*result {
                    Ok(response) => response.request.is_robots(),
                    Err((request, _)) => request.is_robots(),
                };
                self.left_wire(slot, robots, Instant::now());
                match *result {
                    Ok(response) => {
                        let body_len = response.body.len() as u64;
                        if let Some(page) = self.on_response(slot, response, body_len) {
                            self.scraper.parse(page, &self.events_tx);
                        }
                    }
                    Err((request, error)) => self.on_download_error(slot, request, error),
                }
            }
            Event::Parsed {
                job,
                depth,
                backlog,
                result,
            } => match self.scraper.finished(backlog, result) {
                Some(output) => self.on_output(job, depth, output),
                None => self.page_done(job, false),
            },
            Event::Fleet(event) => self.on_fleet_event(event),
            Event::Resolved { host, result } => {
                let dropped =
                    self.admission
                        .resolved(host, result, &mut self.scheduler, &self.events_tx);
                if dropped > 0 {
                    self.downloads.count_errors("DNSLookupError", dropped);
                }
            }
        }
    }

    pub(super) fn publish_progress(&self) {
        let p = &self.progress;
        // With worker processes, pages and items come from the counters the
        // workers keep in shared memory, as live as it gets.
        // (Items are counted by the item thread, after the pipelines.)
        let downloaded = &self.downloads.stats;
        let pages = match self.downloads.fleet_ref() {
            Some(fleet) => fleet.live_totals().0,
            None => downloaded.get("response_received_count"),
        };
        Progress::set(&p.pages, pages);
        Progress::set(&p.requests, downloaded.get("downloader/request_count"));
        Progress::set(&p.in_flight, self.downloads.in_flight() as u64);
        Progress::set(&p.queued, self.scheduler.len() as u64);
        Progress::set(&p.failed, downloaded.get("downloader/exception_count"));
    }

    /// Scrapy's LogStats line; returns the counts it logged.
    pub(super) fn log_stats(
        &self,
        (pages_before, items_before): (u64, u64),
        interval: Duration,
    ) -> (u64, u64) {
        let pages = self.downloads.stats.get("response_received_count");
        let items = Progress::get(&self.progress.items);
        let per_min = 60.0 / interval.as_secs_f64();
        info!(
            "Crawled {} pages (at {:.0} pages/min), scraped {} items (at {:.0} items/min)",
            pages,
            (pages - pages_before) as f64 * per_min,
            items,
            (items - items_before) as f64 * per_min
        );
        info!(
            slots = self.scheduler.slot_count(),
            in_flight = self.downloads.in_flight(),
            queued = self.scheduler.len(),
            descriptors = crate::downloader::fdlimit::open_descriptors().unwrap_or(0),
            "broad-crawl figures"
        );
        (pages, items)
    }
}

/// Up to this many slots, every connection is kept alive for reuse.
pub(super) const KEEP_ALIVE_SLOTS: usize = 64;

async fn sleep_until_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn tick_opt(interval: &mut Option<tokio::time::Interval>) {
    match interval {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}
