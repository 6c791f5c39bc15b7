//! The event loop: dispatching what may start, and handling what comes back.

use std::time::{Duration, Instant};

use tracing::info;

use super::*;
use crate::scheduler::Dispatch;

impl Engine {
    pub(super) async fn run(
        &mut self,
        mut events: mpsc::UnboundedReceiver<Event>,
        shutdown: ShutdownHandle,
    ) -> String {
        info!(spider = self.spider.name(), "spider opened");
        for request in self.spider.start_requests() {
            self.admit(request, Source::Start);
        }
        let interval = self.settings.logstats_interval;
        let mut logstats = (!interval.is_zero()).then(|| {
            let mut t = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            t
        });
        let mut last_logged = (0u64, 0u64);
        let timeout = self.settings.closespider_timeout;
        let close_timer = tokio::time::sleep(if timeout.is_zero() {
            Duration::MAX / 4
        } else {
            timeout
        });
        tokio::pin!(close_timer);

        loop {
            self.dispatch();
            self.publish_progress();
            if self.is_done() {
                break;
            }
            let wakeup = self
                .scheduler
                .next_wakeup()
                .map(tokio::time::Instant::from_std);
            tokio::select! {
                Some(event) = events.recv() => {
                    self.handle(event);
                    while let Ok(event) = events.try_recv() {
                        self.handle(event);
                    }
                    self.close_on_counts();
                }
                _ = sleep_until_opt(wakeup), if wakeup.is_some() && self.closing.is_none() => {}
                _ = tick_opt(&mut logstats) => {
                    last_logged = self.log_stats(last_logged, interval);
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
        while !self.downloads.needs_backout() && !self.scraper.needs_backout() {
            let Some(Dispatch {
                slot,
                request,
                pacing,
            }) = self.scheduler.pop(now)
            else {
                break;
            };
            let Some(request) = self.prepare(slot, request) else {
                self.scheduler.finish(slot, now);
                continue;
            };
            if !self.downloads.start(slot, request, pacing, &self.events_tx) {
                self.scheduler.finish(slot, now);
                self.close("workers_failed");
                return;
            }
        }
    }

    /// Passes a request through the downloader middlewares; `None` when one dropped it.
    fn prepare(&mut self, slot: SlotId, mut request: Request) -> Option<Request> {
        let key = self.scheduler.slot_key(slot).to_string();
        let mut cx = middleware::Context::new(&mut self.mw_stats, &key, self.closing.is_some());
        for mw in &mut self.middlewares {
            if mw.process_request(&mut request, &mut cx) != middleware::Action::Continue {
                if let Some(origin) = request.robots_origin() {
                    let origin = origin.to_string();
                    self.admission
                        .robots_missing(&origin, &mut self.scheduler, &self.events_tx);
                }
                return None;
            }
        }
        Some(request)
    }

    /// Admits a request through the admission part into the scheduler.
    pub(super) fn admit(&mut self, request: Request, source: Source) {
        self.admission
            .admit(request, source, &mut self.scheduler, &self.events_tx);
    }

    pub(super) fn handle(&mut self, event: Event) {
        match event {
            Event::Downloaded { slot, result } => {
                self.downloads.finished();
                self.scheduler.finish(slot, Instant::now());
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
                depth,
                backlog,
                result,
            } => {
                if let Some(output) = self.scraper.finished(backlog, result) {
                    self.on_output(depth, output);
                }
            }
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
        (pages, items)
    }
}

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
