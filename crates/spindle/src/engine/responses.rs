//! What happens to a finished download: stats, retries, redirects, robots.txt answers, parsing, and the spider's output.

use super::*;

impl Engine {
    /// Handles a downloaded response: stats, Retry-After, retries, redirects
    /// and robots.txt. Returns it when it is a 2xx page for the spider to parse.
    /// `body_len` is the body's size where it was downloaded (a worker process
    /// keeps page bodies and parses them itself).
    pub(super) fn on_downloaded(
        &mut self,
        slot: SlotId,
        mut response: Response,
        body_len: u64,
    ) -> Option<Response> {
        let status = response.status;
        self.stats.inc("downloader/response_count");
        self.stats
            .inc(&format!("downloader/response_status_count/{status}"));
        self.stats.inc_by("downloader/response_bytes", body_len);
        self.stats.inc("response_received_count");
        debug!(url = %response.url, status, "crawled");
        let warnsize = self.settings.download_warnsize;
        if warnsize > 0 && body_len > warnsize {
            warn!(url = %response.url, bytes = body_len, "body larger than DOWNLOAD_WARNSIZE");
            self.stats.inc("downloader/warnsize_count");
        }
        let request = response.request.clone();
        let mut cx = middleware::Context::new(&mut self.stats);
        for mw in &mut self.middlewares {
            if let middleware::Action::Drop(reason) =
                mw.process_response(&request, &mut response, &mut cx)
            {
                cx.inc_stat(&format!("downloadermiddleware/dropped_count/{reason}"), 1);
                return None;
            }
        }
        let pagecount = self.settings.closespider_pagecount;
        if pagecount > 0 && self.stats.get("response_received_count") >= pagecount {
            self.close("closespider_pagecount");
        }

        // A 429 or 503 that says when to come back pauses its slot, retried or not.
        let now = Instant::now();
        let told_to_wait =
            retry::retry_after(status, &response.headers, &self.settings, SystemTime::now());
        if let Some(wait) = told_to_wait {
            info!(
                slot = self.scheduler.slot_key(slot),
                ?wait,
                status,
                "Retry-After: pausing the slot"
            );
            self.stats.inc("retry/retry_after_count");
            self.scheduler.pause(slot, now + wait, now);
        }
        if self.settings.retry_http_codes.contains(&status)
            && self.retry(
                slot,
                &response.request,
                &status.to_string(),
                told_to_wait.is_some(),
            )
        {
            return None;
        }

        if (300..400).contains(&status) {
            if let Some(target) = redirect_target(&response) {
                self.follow_redirect(response.request, status, target);
                return None;
            }
        }
        if let Purpose::Robots { origin } = &response.request.purpose {
            self.stats.inc("robotstxt/response_count");
            self.stats
                .inc(&format!("robotstxt/response_status_count/{status}"));
            let rules =
                RobotsRules::from_response(status, &response.body, &self.settings.user_agent);
            let origin = origin.clone();
            self.robots_ready(&origin, rules);
            return None;
        }
        if !(200..300).contains(&status) {
            self.stats.inc("httperror/response_ignored_count");
            self.stats
                .inc(&format!("httperror/response_ignored_status_count/{status}"));
            return None;
        }
        Some(response)
    }

    /// Parses a response on this process's parse threads.
    pub(super) fn parse_locally(&mut self, response: Response) {
        let Executor::InProcess { parse_pool, .. } = &self.executor else {
            unreachable!("worker processes parse their own pages");
        };
        let backlog = response.body.len().max(1024);
        self.parse_backlog += backlog;
        self.parses += 1;
        let spider = self.spider.clone();
        let tx = self.events_tx.clone();
        let depth = response.depth();
        parse_pool.spawn(move || {
            let result = std::panic::catch_unwind(AssertUnwindSafe(|| spider.parse(&response)));
            let result = match result {
                Ok(Ok(output)) => Ok(output),
                Ok(Err(e)) => Err(format!("{} on {}", e, response.url)),
                Err(panic) => Err(format!(
                    "parse panicked on {}: {}",
                    response.url,
                    panic_message(&panic)
                )),
            };
            let _ = tx.send(Event::Parsed {
                depth,
                backlog,
                result,
            });
        });
    }

    pub(super) fn on_download_error(
        &mut self,
        slot: SlotId,
        request: Request,
        error: DownloadError,
    ) {
        self.stats.inc("downloader/exception_count");
        self.stats
            .inc(&format!("downloader/exception_type_count/{}", error.kind()));
        if error.is_retryable() && self.retry(slot, &request, error.kind(), false) {
            return;
        }
        warn!(url = %request.url, %error, "download failed");
        if let Purpose::Robots { origin } = request.purpose {
            // RFC 9309: an unreachable robots.txt means complete disallow.
            self.stats.inc("robotstxt/unreachable");
            self.robots_ready(&origin, RobotsRules::DisallowAll);
        }
    }

    /// Queues the request again in its slot after pausing the slot, unless
    /// retries are off or used up. Returns whether it was retried.
    pub(super) fn retry(
        &mut self,
        slot: SlotId,
        request: &Request,
        reason: &str,
        already_paused: bool,
    ) -> bool {
        if !self.settings.retry_enabled || self.closing.is_some() {
            return false;
        }
        if request.retries >= self.settings.retry_times {
            warn!(url = %request.url, retries = request.retries, reason, "gave up retrying");
            self.stats.inc("retry/max_reached");
            return false;
        }
        let mut again = request.clone();
        again.retries += 1;
        again.priority -= 1;
        self.stats.inc("retry/count");
        self.stats.inc("scheduler/enqueued");
        self.stats.inc(&format!("retry/reason_count/{reason}"));
        let now = Instant::now();
        if !already_paused {
            let pause = retry::backoff(&self.settings, again.retries, &mut self.rng);
            debug!(url = %request.url, ?pause, reason, "retrying after a pause of the slot");
            self.scheduler.pause(slot, now + pause, now);
        }
        let key = self.scheduler.slot_key(slot).to_string();
        self.scheduler.push(&key, again, now);
        true
    }

    pub(super) fn follow_redirect(&mut self, from: Request, status: u16, target: Url) {
        let robots = from.is_robots();
        let refuse = if from.redirects >= self.settings.redirect_max_times {
            debug!(url = %from.url, "discarding: max redirections reached");
            Some("redirect/max_reached")
        } else if crate::request::check_crawlable(&target).is_err() {
            Some("redirect/unsupported_scheme")
        } else if !robots && !self.offsite.allows(&target) {
            self.count_offsite(&target);
            Some("redirect/offsite")
        } else {
            None
        };
        if let Some(stat) = refuse {
            self.stats.inc(stat);
            if let Purpose::Robots { origin } = from.purpose {
                // RFC 9309: a robots.txt that cannot be reached by redirects counts as missing.
                self.robots_ready(&origin, RobotsRules::AllowAll);
            }
            return;
        }
        // The redirect carries the whole request (data, label, cookie jar,
        // headers) to its new URL. As browsers and Scrapy do, a 301, 302 or
        // 303 turns a POST (any method but HEAD) into a GET without a body;
        // 307 and 308 keep the method and body.
        let mut next = from;
        next.url = target;
        next.priority += 2;
        next.redirects += 1;
        next.retries = 0;
        if matches!(status, 301..=303) && next.method != reqwest::Method::HEAD {
            next.method = reqwest::Method::GET;
            next.body = bytes::Bytes::new();
            next.headers.remove(reqwest::header::CONTENT_TYPE);
            next.headers.remove(reqwest::header::CONTENT_LENGTH);
        }
        // The cookie jar sets the Cookie header afresh for the new URL.
        next.headers.remove(reqwest::header::COOKIE);
        self.schedule(next);
    }

    pub(super) fn on_output(&mut self, parent_depth: u32, output: Output) {
        for item in output.items {
            if !self.items.send(item) && !self.export_failed {
                self.export_failed = true;
                self.close("export_error");
            }
        }
        for (key, n) in output.stats {
            self.stats.inc_by(key, n);
        }
        if self.closing.is_some() {
            return;
        }
        let depth = parent_depth + 1;
        let limit = self.settings.depth_limit;
        for mut request in output.requests {
            if limit > 0 && depth > limit {
                self.stats.inc("depth_limit/filtered");
                continue;
            }
            if !self.offsite.allows(&request.url) {
                self.count_offsite(&request.url);
                continue;
            }
            request.depth = depth;
            self.schedule(request);
        }
    }

    pub(super) fn count_offsite(&mut self, url: &Url) {
        self.stats.inc("offsite/filtered");
        if let Some(host) = url.host_str() {
            if self.offsite_domains.insert(host.to_string()) {
                self.stats.inc("offsite/domains");
            }
        }
    }
}

fn redirect_target(response: &Response) -> Option<Url> {
    let location = response
        .headers
        .get(reqwest::header::LOCATION)?
        .to_str()
        .ok()?;
    response.url.join(location.trim()).ok()
}
