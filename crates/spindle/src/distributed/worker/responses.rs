//! What comes back from a download: the middlewares' decision, robots.txt
//! answers, the spider's output, each turned into the finish that commits it.

use std::time::Duration;

use tracing::{debug, info, warn};

use super::{Event, Worker};
use crate::distributed::conn::Finish;
use crate::middleware::{Action, Context, DownloaderMiddleware};
use crate::request::Request;
use crate::response::Response;
use crate::robots::RobotsRules;

impl Worker {
    /// Runs one hook of each middleware in order until one decides; returns
    /// the decision and any slot pause asked for.
    pub(super) fn run_middlewares(
        &mut self,
        slot: &str,
        hook: impl FnMut(&mut dyn DownloaderMiddleware, &mut Context<'_>) -> Action,
    ) -> (Action, Option<Duration>) {
        let cx = Context::new(&mut self.mw_stats, slot, self.closing.is_some());
        crate::middleware::run_chain(&mut self.middlewares, cx, hook)
    }

    /// Carries out a middleware's decision on a held request.
    pub(super) fn act(
        &mut self,
        id: u64,
        request: Request,
        action: Action,
        pause: Option<Duration>,
    ) {
        let Some(held) = self.held.get(&id) else {
            return;
        };
        let mut finish = Finish {
            id,
            token: held.token,
            pause_us: pause.map_or(0, |d| d.as_micros() as u64),
            ..Finish::default()
        };
        match action {
            Action::Continue | Action::Drop => {
                if let Some(origin) = request.robots_origin() {
                    // As the one-process engine: a robots.txt that cannot be had allows all.
                    finish.robots = Some((origin.to_string(), b"404\n".to_vec(), 0));
                }
            }
            Action::Retry(again) => match postcard::to_allocvec(&again) {
                Ok(bytes) => finish.retry = Some(bytes),
                Err(e) => warn!(error = %e, "cannot serialize a retry; dropped"),
            },
            Action::Follow(next) => {
                // A redirect: admitted like a link of the page before it
                // (offsite, depth limit, duplicates), at the same depth.
                // With per-IP slots it keeps the redirecting request's slot
                // (no lookup here): a redirect to another address is
                // paced with the address it came from.
                let mut next = next;
                if self.settings.concurrent_requests_per_ip > 0 && next.slot.is_none() {
                    next.slot = self.held.get(&id).map(|h| h.slot.clone());
                }
                let pushes = self.admit_sync(next, Some(request.depth.saturating_sub(1)));
                finish.pushes = pushes;
            }
        }
        self.finishes.push_back(finish);
    }

    pub(super) async fn handle(&mut self, event: Event) {
        match event {
            Event::Returned { id, bytes, why } => {
                self.progress
                    .in_flight
                    .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                self.stats.inc(why);
                debug!(id, why, "not sent; returned to the frontier");
                if let Some(held) = self.held.get(&id) {
                    self.finishes.push_back(Finish {
                        id,
                        token: held.token,
                        retry: Some(bytes),
                        ..Finish::default()
                    });
                }
            }
            Event::Forbidden { id } => {
                self.progress
                    .in_flight
                    .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                self.stats.inc("robotstxt/forbidden");
                if let Some(held) = self.held.get(&id) {
                    self.finishes.push_back(Finish {
                        id,
                        token: held.token,
                        ..Finish::default()
                    });
                }
            }
            Event::Downloaded { id, result } => {
                self.progress
                    .in_flight
                    .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                let Some(slot) = self.held.get(&id).map(|h| h.slot.clone()) else {
                    return;
                };
                match *result {
                    Ok(mut response) => {
                        self.stats.inc("response_received_count");
                        self.stats.inc(&format!(
                            "downloader/response_status_count/{}",
                            response.status
                        ));
                        if response.request.robots_origin().is_none() {
                            self.progress
                                .pages
                                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        let (action, pause) = self.run_middlewares(&slot, |mw, cx| {
                            mw.process_response(&mut response, cx)
                        });
                        if action != Action::Continue {
                            let request = response.request.clone();
                            self.act(id, request, action, pause);
                            return;
                        }
                        if let Some(origin) = response.request.robots_origin() {
                            self.robots_answered(id, origin.to_string(), &response, pause);
                            return;
                        }
                        let spider = self.spider.clone();
                        let events = self.events.clone();
                        let depth = response.depth();
                        tokio::task::spawn_blocking(move || {
                            let result =
                                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                                    spider.parse(&response)
                                }));
                            let result = match result {
                                Ok(Ok(output)) => Ok(output),
                                Ok(Err(e)) => Err(e.to_string()),
                                Err(panic) => Err(crate::engine::panic_message(&panic)),
                            };
                            let _ = events.send(Event::Parsed { id, depth, result });
                        });
                    }
                    Err((request, error)) => {
                        self.stats
                            .inc(&format!("downloader/exception_type_count/{}", error.kind()));
                        let (action, pause) = self.run_middlewares(&slot, |mw, cx| {
                            mw.process_exception(&request, &error, cx)
                        });
                        if action == Action::Continue {
                            warn!(url = %request.url, error = %error, "download failed");
                        }
                        self.act(id, request, action, pause);
                    }
                }
            }
            Event::Parsed { id, depth, result } => {
                let Some(held) = self.held.get(&id) else {
                    return;
                };
                let mut finish = Finish {
                    id,
                    token: held.token,
                    page: true,
                    ..Finish::default()
                };
                match result {
                    Ok(output) => {
                        for item in &output.items {
                            match serde_json::to_string(item) {
                                Ok(text) => finish.items.push(text),
                                Err(e) => warn!(error = %e, "item cannot be serialized; dropped"),
                            }
                        }
                        for (key, n) in output.stats {
                            self.stats.inc_by(key, n);
                        }
                        for request in output.requests {
                            let pushes = self.admit(request, Some(depth)).await;
                            finish.pushes.extend(pushes);
                        }
                    }
                    Err(e) => {
                        warn!(error = %e, "spider error");
                        self.stats.inc("spider_exceptions/count");
                    }
                }
                self.finishes.push_back(finish);
            }
        }
    }

    pub(super) fn robots_answered(
        &mut self,
        id: u64,
        origin: String,
        response: &Response,
        pause: Option<Duration>,
    ) {
        self.stats.inc("robotstxt/response_count");
        let rules =
            RobotsRules::from_response(response.status, &response.body, &self.settings.user_agent);
        let delay = rules
            .crawl_delay()
            .map(|d| d.min(self.settings.robotstxt_crawl_delay_max));
        if let Some(delay) = delay {
            info!(origin = %origin, ?delay, "robots.txt Crawl-delay applied");
        }
        let mut answer = format!("{}\n", response.status).into_bytes();
        answer.extend_from_slice(&response.body);
        let Some(held) = self.held.get(&id) else {
            return;
        };
        self.finishes.push_back(Finish {
            id,
            token: held.token,
            pause_us: pause.map_or(0, |d| d.as_micros() as u64),
            robots: Some((origin, answer, delay.map_or(0, |d| d.as_micros() as u64))),
            ..Finish::default()
        });
    }
}
