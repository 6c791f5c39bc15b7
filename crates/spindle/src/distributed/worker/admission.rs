//! Admission of new requests: the filters, the slot key, and the robots.txt
//! request an origin needs first.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::warn;

use super::{RobotsCache, Worker, ROBOTS_PRIORITY};
use crate::distributed::conn::{partition, JobConn, Push};
use crate::request::{Purpose, Request};
use crate::robots::{self, RobotsRules};

impl Worker {
    /// The filters a new request passes (crawlable URL, offsite, depth), its
    /// slot, and the robots.txt request its origin needs first; what to push.
    /// `parent` is the depth of the page it came from (`None`: a start request).
    pub(super) async fn admit(&mut self, mut request: Request, parent: Option<u32>) -> Vec<Push> {
        if parent.is_some()
            && self.settings.concurrent_requests_per_ip > 0
            && request.slot.is_none()
        {
            // Per-IP slots: the key is the host's address, resolved here.
            let host = request.url.host_str().unwrap_or_default().to_string();
            match self.resolver.lookup(&host).await {
                Ok(ips) if !ips.is_empty() => request.slot = Some(ip_slot(ips[0])),
                Ok(_) => {}
                Err(e) => {
                    warn!(host = %host, error = %e, "DNS lookup failed; request dropped");
                    self.stats.inc("distributed/dns_error");
                    return Vec::new();
                }
            }
        } else if parent.is_none()
            && self.settings.concurrent_requests_per_ip > 0
            && request.slot.is_none()
        {
            let host = request.url.host_str().unwrap_or_default().to_string();
            if let Ok(ips) = self.resolver.lookup(&host).await {
                if let Some(ip) = ips.first() {
                    request.slot = Some(ip_slot(*ip));
                }
            }
        }
        self.admit_sync(request, parent)
    }

    pub(super) fn admit_sync(&mut self, mut request: Request, parent: Option<u32>) -> Vec<Push> {
        if crate::request::check_crawlable(&request.url).is_err() {
            return Vec::new();
        }
        if let Some(depth) = parent {
            request.depth = depth + 1;
            if !self.offsite.allows(&request.url) {
                self.stats.inc("offsite/filtered");
                return Vec::new();
            }
            let limit = self.settings.depth_limit;
            if limit > 0 && request.depth > limit {
                return Vec::new();
            }
        }
        let slot = request.slot.clone().unwrap_or_else(|| {
            request
                .url
                .host_str()
                .unwrap_or_default()
                .to_ascii_lowercase()
        });
        let policy = self.policies.for_key(&slot);
        let push = |fp: Option<u64>, r: &Request| -> Option<Push> {
            Some(Push {
                fp,
                slot: slot.clone(),
                priority: r.priority,
                bytes: postcard::to_allocvec(r).ok()?,
                cap: policy.concurrency,
                delay_us: policy.delay.as_micros() as u64,
                randomize: policy.randomize_delay,
            })
        };
        let mut out = Vec::new();
        if self.settings.robotstxt_obey && request.purpose == Purpose::Page {
            let origin = robots::origin(&request.url);
            // Once per origin and partition: robots.txt answers are kept in
            // the partition of the slot whose pages wait for them.
            let part = partition(&slot, self.conn.parts());
            if self.robots_pushed.insert((origin.clone(), part)) {
                let mut fetch = Request::new(robots::robots_url(&request.url));
                fetch.purpose = Purpose::Robots { origin };
                fetch.priority = ROBOTS_PRIORITY;
                fetch.slot = request.slot.clone();
                fetch.dont_filter = true;
                self.stats.inc("robotstxt/request_count");
                out.extend(push(Some(fetch.fingerprint()), &fetch));
            }
        }
        let fp = (!request.dont_filter).then(|| request.fingerprint());
        out.extend(push(fp, &request));
        out
    }
}

fn ip_slot(ip: IpAddr) -> String {
    ip.to_string()
}

/// An origin's robots.txt rules: from this worker's cache, else from Redis
/// once some worker fetched them (waiting for that, holding the lease).
pub(super) async fn robots_for(
    mut conn: JobConn,
    part: usize,
    cache: RobotsCache,
    url: &url::Url,
    agent: &str,
) -> Arc<RobotsRules> {
    let origin = robots::origin(url);
    let mut wait = Duration::from_millis(5);
    loop {
        if let Some((rules, _)) = cache.lock().expect("robots cache").get(&origin) {
            return rules.clone();
        }
        if let Ok(Some(answer)) = conn.robots(part, &origin).await {
            let (status, body) = match answer.iter().position(|b| *b == b'\n') {
                Some(nl) => (&answer[..nl], &answer[nl + 1..]),
                None => (&answer[..], &[][..]),
            };
            let status = std::str::from_utf8(status)
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(404);
            let rules = Arc::new(RobotsRules::from_response(status, body, agent));
            cache
                .lock()
                .expect("robots cache")
                .entry(origin.clone())
                .or_insert_with(|| (rules.clone(), Instant::now()));
            return rules;
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_millis(100));
    }
}
