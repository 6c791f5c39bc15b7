//! Admission of new requests: the duplicate filter, robots.txt, and the slot a request queues in.

use super::*;

impl Engine {
    /// Admits a request through the duplicate filter and robots.txt, then queues it in its slot.
    pub(super) fn schedule(&mut self, request: Request) {
        if !self.scheduler.admit(&request) {
            self.stats.inc("dupefilter/filtered");
            return;
        }
        self.stats.inc("scheduler/enqueued");
        self.stats
            .max("request_depth_max", u64::from(request.depth));
        if self.settings.robotstxt_obey && request.purpose == Purpose::Page {
            let origin = robots::origin(&request.url);
            match self.robots.get_mut(&origin) {
                Some(RobotsState::Ready(rules)) => {
                    if !rules.allows(&request.url) {
                        self.stats.inc("robotstxt/forbidden");
                        return;
                    }
                }
                Some(RobotsState::Pending(waiting)) => {
                    waiting.push(request);
                    return;
                }
                None => {
                    // The first request to an origin waits for its robots.txt,
                    // which goes through the same slot, caps and delay.
                    let mut fetch = Request::new(robots::robots_url(&request.url));
                    fetch.priority = 1000;
                    fetch.dont_filter = true;
                    fetch.purpose = Purpose::Robots {
                        origin: origin.clone(),
                    };
                    self.robots
                        .insert(origin, RobotsState::Pending(vec![request]));
                    self.stats.inc("robotstxt/request_count");
                    self.enqueue(fetch);
                    return;
                }
            }
        }
        self.enqueue(request);
    }

    /// An origin's robots.txt is known: apply its Crawl-delay, then release or
    /// drop the requests that waited for it.
    pub(super) fn robots_ready(&mut self, origin: &str, rules: RobotsRules) {
        if let Some(delay) = rules.crawl_delay() {
            let delay = delay.min(self.settings.robotstxt_crawl_delay_max);
            if let Some(host) = Url::parse(origin)
                .ok()
                .and_then(|u| u.host_str().map(str::to_string))
            {
                let key = match self.host_ips.get(&host) {
                    Some(ip) if self.settings.concurrent_requests_per_ip > 0 => ip.to_string(),
                    _ => host,
                };
                info!(slot = %key, ?delay, "robots.txt Crawl-delay applied");
                let now = Instant::now();
                let id = self.scheduler.slot(&key);
                self.scheduler.set_delay_floor(id, delay, now);
            }
        }
        let waiting = match self.robots.remove(origin) {
            Some(RobotsState::Pending(waiting)) => waiting,
            _ => Vec::new(),
        };
        for request in waiting {
            if rules.allows(&request.url) {
                self.enqueue(request);
            } else {
                self.stats.inc("robotstxt/forbidden");
            }
        }
        self.robots
            .insert(origin.to_string(), RobotsState::Ready(rules));
    }

    /// Queues an admitted request in its slot: the named slot, the host, or in
    /// per-IP mode the host's address (resolving it first).
    pub(super) fn enqueue(&mut self, request: Request) {
        let host = request
            .url
            .host_str()
            .unwrap_or_default()
            .to_ascii_lowercase();
        if request.slot.is_some() || self.settings.concurrent_requests_per_ip == 0 {
            let key = request.slot.clone().unwrap_or(host);
            self.scheduler.push(&key, request, Instant::now());
            return;
        }
        // Per-IP slots: the key is the address, known before the first request
        // goes out, so hosts sharing an address share a slot from the start.
        if let Some(ip) = self.host_ips.get(&host) {
            let key = ip.to_string();
            self.scheduler.push(&key, request, Instant::now());
            return;
        }
        let waiting = self.awaiting_dns.entry(host.clone()).or_default();
        waiting.push(request);
        if waiting.len() == 1 {
            let resolver = self.resolver.clone();
            let tx = self.events_tx.clone();
            tokio::spawn(async move {
                let result = resolver.lookup(&host).await.map(|ips| ips[0]);
                let _ = tx.send(Event::Resolved { host, result });
            });
        }
    }
}
