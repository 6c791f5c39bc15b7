//! The event loop: dispatching what may start, and handling what comes back.

use super::*;

impl Engine {
    pub(super) async fn run(
        &mut self,
        mut events: mpsc::UnboundedReceiver<Event>,
        shutdown: ShutdownHandle,
    ) -> String {
        info!(spider = self.spider.name(), "spider opened");
        for request in self.spider.start_requests() {
            self.schedule(request);
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
        let busy = self.in_flight > 0 || self.parses > 0;
        if self.closing.is_some() {
            return !busy;
        }
        !busy && self.scheduler.is_empty() && self.awaiting_dns.is_empty()
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
        let cap = self.settings.concurrent_requests;
        let now = Instant::now();
        while (cap == 0 || self.in_flight < cap) && self.parse_backlog < PARSE_BACKLOG_BYTES {
            let Some(Dispatch {
                slot,
                request,
                pacing,
            }) = self.scheduler.pop(now)
            else {
                break;
            };
            self.stats.inc("scheduler/dequeued");
            let Some(request) = self.prepare(request) else {
                self.scheduler.finish(slot, now);
                continue;
            };
            self.in_flight += 1;
            self.stats.inc("downloader/request_count");
            self.stats.inc(&format!(
                "downloader/request_method_count/{}",
                request.method
            ));
            let downloader = match &mut self.executor {
                Executor::InProcess { downloader, .. } => downloader.clone(),
                Executor::Workers(fleet) => {
                    if !fleet.submit(slot, request, pacing) {
                        self.in_flight -= 1;
                        self.scheduler.finish(slot, now);
                        self.stats.inc("worker/no_worker_count");
                        self.close("workers_failed");
                        return;
                    }
                    continue;
                }
            };
            let tx = self.events_tx.clone();
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

    /// Passes a request through the downloader middlewares; `None` when one dropped it.
    fn prepare(&mut self, mut request: Request) -> Option<Request> {
        let mut cx = middleware::Context::new(&mut self.stats);
        for mw in &mut self.middlewares {
            if let middleware::Action::Drop(reason) = mw.process_request(&mut request, &mut cx) {
                cx.inc_stat(&format!("downloadermiddleware/dropped_count/{reason}"), 1);
                return None;
            }
        }
        Some(request)
    }

    pub(super) fn handle(&mut self, event: Event) {
        match event {
            Event::Downloaded { slot, result } => {
                self.in_flight -= 1;
                self.scheduler.finish(slot, Instant::now());
                match *result {
                    Ok(response) => {
                        let body_len = response.body.len() as u64;
                        if let Some(page) = self.on_downloaded(slot, response, body_len) {
                            self.parse_locally(page);
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
                self.parses -= 1;
                self.parse_backlog -= backlog;
                match result {
                    Ok(output) => self.on_output(depth, output),
                    Err(error) => {
                        warn!(%error, "spider error");
                        self.stats.inc("spider_exceptions/count");
                    }
                }
            }
            Event::Fleet(event) => self.on_fleet_event(event),
            Event::Resolved { host, result } => {
                let waiting = self.awaiting_dns.remove(&host).unwrap_or_default();
                match result {
                    Ok(ip) => {
                        self.host_ips.insert(host, ip);
                        let now = Instant::now();
                        let key = ip.to_string();
                        for request in waiting {
                            self.scheduler.push(&key, request, now);
                        }
                    }
                    Err(error) => {
                        warn!(%error, requests = waiting.len(), "dropping requests");
                        self.stats
                            .inc_by("downloader/exception_count", waiting.len() as u64);
                        self.stats.inc_by(
                            "downloader/exception_type_count/DNSLookupError",
                            waiting.len() as u64,
                        );
                        for request in waiting {
                            if let Purpose::Robots { origin } = request.purpose {
                                self.robots_ready(&origin, RobotsRules::DisallowAll);
                            }
                        }
                    }
                }
            }
        }
    }

    pub(super) fn publish_progress(&self) {
        let p = &self.progress;
        // With worker processes, pages and items come from the counters the
        // workers keep in shared memory, as live as it gets.
        // (Items are counted by the item thread, after the pipelines.)
        let pages = match &self.executor {
            Executor::Workers(fleet) => fleet.live_totals().0,
            Executor::InProcess { .. } => self.stats.get("response_received_count"),
        };
        Progress::set(&p.pages, pages);
        Progress::set(&p.requests, self.stats.get("downloader/request_count"));
        Progress::set(&p.in_flight, self.in_flight as u64);
        Progress::set(&p.queued, self.scheduler.len() as u64);
        Progress::set(&p.failed, self.stats.get("downloader/exception_count"));
    }

    /// Scrapy's LogStats line; returns the counts it logged.
    pub(super) fn log_stats(
        &self,
        (pages_before, items_before): (u64, u64),
        interval: Duration,
    ) -> (u64, u64) {
        let pages = self.stats.get("response_received_count");
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
