//! The admission part: what a request passes before it queues in its slot.
//!
//! In order: the depth limit and the offsite filter (for links a spider
//! found, and the offsite filter for redirects too), the duplicate filter
//! (the scheduler's), robots.txt (the first request to an origin waits for
//! its robots.txt, fetched through the same slot), and the slot key (the
//! named slot, the host, or in per-IP mode the address the host resolves
//! to, looked up before the first request goes out).

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tracing::{info, warn};
use url::Url;

use super::Event;
use crate::downloader::dns::{DnsError, Resolver};
use crate::offsite::OffsiteFilter;
use crate::request::{Purpose, Request};
use crate::robots::{self, RobotsRules};

use super::robots_cache::{Lookup, RobotsCache, RobotsState};
use crate::scheduler::Scheduler;
use crate::settings::Settings;
use crate::stats::Stats;

/// The slot-state key prefix of an origin's robots.txt answer.
pub(super) const ROBOTS_STATE: &str = "robots ";

/// Where a request to admit comes from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Source {
    /// The spider's start requests: never filtered by depth or domain.
    Start,
    /// A link found on a page of this depth.
    Page { parent_depth: u32 },
    /// A redirect, which keeps its request's depth.
    Redirect,
    /// A request a resumed job held: it passed the filters in an earlier run,
    /// so only robots.txt and the slot key apply.
    Resume,
}

pub(super) struct Admission {
    offsite: OffsiteFilter,
    offsite_domains: HashSet<String>,
    depth_limit: u32,
    obey_robots: bool,
    user_agent: String,
    crawl_delay_max: Duration,
    per_ip: bool,
    resolver: Arc<Resolver>,
    /// robots.txt per origin, once asked for.
    robots: RobotsCache,
    /// Per-IP mode: the address each host's requests are keyed by.
    host_ips: HashMap<String, IpAddr>,
    /// Per-IP mode: requests held until their host is resolved.
    awaiting_dns: HashMap<String, Vec<Request>>,
    pub(super) stats: Stats,
}

impl Admission {
    pub(super) fn new(
        settings: &Settings,
        allowed_domains: Vec<String>,
        resolver: Arc<Resolver>,
    ) -> Self {
        Admission {
            offsite: OffsiteFilter::new(allowed_domains),
            offsite_domains: HashSet::new(),
            depth_limit: settings.depth_limit,
            obey_robots: settings.robotstxt_obey,
            user_agent: settings.user_agent.clone(),
            crawl_delay_max: settings.robotstxt_crawl_delay_max,
            per_ip: settings.concurrent_requests_per_ip > 0,
            resolver,
            robots: RobotsCache::default(),
            host_ips: HashMap::new(),
            awaiting_dns: HashMap::new(),
            stats: Stats::default(),
        }
    }

    /// Requests held for a DNS answer (per-IP mode).
    pub(super) fn is_waiting(&self) -> bool {
        !self.awaiting_dns.is_empty()
    }

    /// Admits a request, or counts why not, then queues it in its slot.
    pub(super) fn admit(
        &mut self,
        mut request: Request,
        source: Source,
        scheduler: &mut Scheduler,
        events: &mpsc::UnboundedSender<Event>,
    ) {
        if let Source::Page { parent_depth } = source {
            let depth = parent_depth + 1;
            if self.depth_limit > 0 && depth > self.depth_limit {
                self.stats.inc("depth_limit/filtered");
                return;
            }
            request.depth = depth;
        }
        if !matches!(source, Source::Start | Source::Resume)
            && !request.is_robots()
            && !self.offsite.allows(&request.url)
        {
            self.count_offsite(&request.url);
            if source == Source::Redirect {
                self.stats.inc("redirect/offsite");
            }
            return;
        }
        if source != Source::Resume && !scheduler.admit(&mut request) {
            return;
        }
        self.stats
            .max("request_depth_max", u64::from(request.depth));
        if self.obey_robots && request.purpose == Purpose::Page {
            let origin = robots::origin(&request.url);
            match self.robots.lookup(&origin, Instant::now()) {
                Lookup::Known(RobotsState::Ready(rules, _)) => {
                    if !rules.allows(&request.url) {
                        self.stats.inc("robotstxt/forbidden");
                        scheduler.done(&request, false);
                        return;
                    }
                }
                Lookup::Known(RobotsState::Pending(waiting)) => {
                    waiting.push(Box::new(request));
                    return;
                }
                found @ (Lookup::Unknown | Lookup::Expired) => {
                    if matches!(found, Lookup::Expired) {
                        self.stats.inc("robotstxt/expired");
                    }
                    // The first request to an origin waits for its robots.txt,
                    // which goes through the same slot, caps and delay.
                    let mut fetch = Request::new(robots::robots_url(&request.url));
                    fetch.priority = 1000;
                    fetch.dont_filter = true;
                    fetch.purpose = Purpose::Robots {
                        origin: origin.clone(),
                    };
                    self.robots.start(&origin, request);
                    self.stats.inc("robotstxt/request_count");
                    self.enqueue(fetch, scheduler, events);
                    return;
                }
            }
        }
        self.enqueue(request, scheduler, events);
    }

    fn count_offsite(&mut self, url: &Url) {
        self.stats.inc("offsite/filtered");
        if let Some(host) = url.host_str() {
            if self.offsite_domains.insert(host.to_string()) {
                self.stats.inc("offsite/domains");
            }
        }
    }

    /// A robots.txt answered with `status` and `body`.
    pub(super) fn robots_answered(
        &mut self,
        origin: &str,
        status: u16,
        body: &[u8],
        scheduler: &mut Scheduler,
        events: &mpsc::UnboundedSender<Event>,
    ) {
        self.stats.inc("robotstxt/response_count");
        self.stats
            .inc(&format!("robotstxt/response_status_count/{status}"));
        let rules = RobotsRules::from_response(status, body, &self.user_agent);
        // A resumed job reads it back instead of fetching it again.
        let mut state = status.to_be_bytes().to_vec();
        state.extend_from_slice(body);
        scheduler.keep_state(format!("{ROBOTS_STATE}{origin}"), state);
        self.robots_ready(origin, rules, scheduler, events);
    }

    /// A resumed job's robots.txt answer for an origin, as kept in its store.
    pub(super) fn restore_robots(
        &mut self,
        origin: &str,
        state: &[u8],
        scheduler: &mut Scheduler,
        events: &mpsc::UnboundedSender<Event>,
    ) {
        if state.len() < 2 {
            return;
        }
        let status = u16::from_be_bytes([state[0], state[1]]);
        let rules = RobotsRules::from_response(status, &state[2..], &self.user_agent);
        self.robots_ready(origin, rules, scheduler, events);
    }

    /// A robots.txt could not be fetched (after retries): RFC 9309 reads that
    /// as complete disallow.
    ///
    /// The requests that waited for it are dropped as unreachable (not as forbidden), each
    /// with a warning that names `error`, so an unreachable start page says so.
    pub(super) fn robots_unreachable(
        &mut self,
        origin: &str,
        error: &str,
        scheduler: &mut Scheduler,
        events: &mpsc::UnboundedSender<Event>,
    ) {
        self.stats.inc("robotstxt/unreachable");
        if let Some(waiting) = self.robots.waiting(origin) {
            for request in waiting.drain(..) {
                warn!(url = %request.url, "cannot reach the page: its site's robots.txt failed ({error}), so nothing on {origin} is fetched");
                self.stats.inc("robotstxt/unreachable_dropped");
            }
        }
        self.robots_ready(origin, RobotsRules::DisallowAll, scheduler, events);
    }

    /// A robots.txt that cannot be reached by its redirects counts as
    /// missing (RFC 9309), and so does one a middleware dropped.
    pub(super) fn robots_missing(
        &mut self,
        origin: &str,
        scheduler: &mut Scheduler,
        events: &mpsc::UnboundedSender<Event>,
    ) {
        self.robots_ready(origin, RobotsRules::AllowAll, scheduler, events);
    }

    /// A robots.txt fetch was abandoned for the crawler's own reasons (out of
    /// descriptors) or because its slot was given up: the requests that waited
    /// for it are dropped, and the origin is forgotten, so that a later request
    /// asks for its robots.txt again. Returns how many requests were dropped.
    pub(super) fn robots_abandoned(&mut self, origin: &str) -> u64 {
        self.robots.abandon(origin).len() as u64
    }

    /// A robots.txt fetch was given up because its workers kept dying.
    pub(super) fn robots_given_up(
        &mut self,
        origin: &str,
        scheduler: &mut Scheduler,
        events: &mpsc::UnboundedSender<Event>,
    ) {
        self.robots_ready(origin, RobotsRules::DisallowAll, scheduler, events);
    }

    /// An origin's robots.txt is known: apply its Crawl-delay, then release or
    /// drop the requests that waited for it.
    fn robots_ready(
        &mut self,
        origin: &str,
        rules: RobotsRules,
        scheduler: &mut Scheduler,
        events: &mpsc::UnboundedSender<Event>,
    ) {
        if let Some(delay) = rules.crawl_delay() {
            let delay = delay.min(self.crawl_delay_max);
            if let Some(host) = Url::parse(origin)
                .ok()
                .and_then(|u| u.host_str().map(str::to_string))
            {
                let key = match self.host_ips.get(&host) {
                    Some(ip) if self.per_ip => ip.to_string(),
                    _ => host,
                };
                info!(slot = %key, ?delay, "robots.txt Crawl-delay applied");
                let id = scheduler.slot(&key);
                scheduler.set_delay_floor(id, delay, Instant::now());
            }
        }
        let released = self.robots.ready(origin, rules, Instant::now());
        if released.evicted > 0 {
            self.stats.inc_by("robotstxt/evicted", released.evicted);
        }
        for request in released.forbidden {
            self.stats.inc("robotstxt/forbidden");
            scheduler.done(&request, false);
        }
        for request in released.allowed {
            self.enqueue(*request, scheduler, events);
        }
    }

    /// Queues an admitted request in its slot: the named slot, the host, or in
    /// per-IP mode the host's address (resolving it first).
    fn enqueue(
        &mut self,
        request: Request,
        scheduler: &mut Scheduler,
        events: &mpsc::UnboundedSender<Event>,
    ) {
        let host = request
            .url
            .host_str()
            .unwrap_or_default()
            .to_ascii_lowercase();
        if request.slot.is_some() || !self.per_ip {
            let key = request.slot.clone().unwrap_or(host);
            self.push(&key, request, scheduler);
            return;
        }
        // Per-IP slots: the key is the address, known before the first request
        // goes out, so hosts sharing an address share a slot from the start.
        if let Some(ip) = self.host_ips.get(&host) {
            let key = ip.to_string();
            self.push(&key, request, scheduler);
            return;
        }
        let waiting = self.awaiting_dns.entry(host.clone()).or_default();
        waiting.push(request);
        if waiting.len() == 1 {
            self.resolve(host, Duration::ZERO, events);
        }
    }

    /// Looks a host up after `after` (per-IP mode); the answer comes back as an event.
    fn resolve(&self, host: String, after: Duration, events: &mpsc::UnboundedSender<Event>) {
        let resolver = self.resolver.clone();
        let tx = events.clone();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let result = resolver.lookup(&host).await.map(|ips| ips[0]);
            let _ = tx.send(Event::Resolved { host, result });
        });
    }

    /// Queues a request in its slot, unless the slot was given up
    /// (`SLOT_MAX_EXCEPTIONS`); then it is dropped and counted.
    fn push(&mut self, key: &str, request: Request, scheduler: &mut Scheduler) {
        if scheduler.is_given_up(key) {
            self.stats.inc("slot/given_up_requests");
            if let Some(origin) = request.robots_origin() {
                let waiting = self.robots_abandoned(origin);
                self.stats.inc_by("slot/given_up_requests", waiting);
            }
            return;
        }
        scheduler.push(key, request, Instant::now());
    }

    /// A host's address is known (per-IP mode): its requests queue in its
    /// address's slot. On failure returns how many requests were dropped.
    pub(super) fn resolved(
        &mut self,
        host: String,
        result: Result<IpAddr, DnsError>,
        scheduler: &mut Scheduler,
        events: &mpsc::UnboundedSender<Event>,
    ) -> u64 {
        if let Err(error) = &result {
            if error.is_resources() {
                // Out of descriptors: our trouble, not the host's. Ask again later.
                self.stats.inc("downloader/fd_wait_count");
                self.resolve(host, Duration::from_millis(500), events);
                return 0;
            }
        }
        let waiting = self.awaiting_dns.remove(&host).unwrap_or_default();
        match result {
            Ok(ip) => {
                self.host_ips.insert(host, ip);
                let key = ip.to_string();
                for request in waiting {
                    self.push(&key, request, scheduler);
                }
                0
            }
            Err(error) => {
                warn!(%error, requests = waiting.len(), "dropping requests");
                let dropped = waiting.len() as u64;
                for request in waiting {
                    scheduler.done(&request, false);
                    if let Purpose::Robots { origin } = request.purpose {
                        self.robots_given_up(&origin, scheduler, events);
                    }
                }
                dropped
            }
        }
    }
}
