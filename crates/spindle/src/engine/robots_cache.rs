//! robots.txt per origin: asked for once, kept for a day, at most
//! [`ROBOTS_CACHE_MAX`] origins, the oldest evicted first.
//!
//! Entries are keyed by a 128-bit hash of the origin, not by its text. Most
//! hosts of a broad crawl have rules that need no memory of their own (a 404
//! allows all, an unreachable robots.txt disallows all), so their entries live
//! wholly inside the map's table. Keyed by `String`s, 100,000 finished hosts
//! left 100,000 small allocations scattered between the pages their requests
//! had used, and the allocator could give none of those pages back.

// Waiting requests are boxed on purpose: most hosts have one, a `Vec`'s first
// allocation has room for four, and a `Request` is about 500 bytes.
#![allow(clippy::vec_box)]

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::request::Request;
use crate::robots::RobotsRules;

/// robots.txt rules are kept this long, then fetched again (RFC 9309 §2.4: at most 24 hours).
pub(super) const ROBOTS_CACHE_TTL: Duration = Duration::from_secs(24 * 3600);
/// At most this many origins' rules are kept; the oldest go first and are fetched again if needed.
pub(super) const ROBOTS_CACHE_MAX: usize = 100_000;

/// An origin's robots.txt, once asked for.
pub(super) enum RobotsState {
    /// Fetching; these requests wait for the answer (boxed: a waiting list
    /// is short, and its first allocation has room for four).
    Pending(Vec<Box<Request>>),
    /// Known since then.
    Ready(RobotsRules, Instant),
}

/// The hash an origin is known by. 128 bits: two origins of a crawl
/// sharing one is not a practical concern (about 10^-29 for a million).
type OriginKey = u128;

fn key(origin: &str) -> OriginKey {
    xxhash_rust::xxh3::xxh3_128(origin.as_bytes())
}

/// robots.txt state per origin, bounded and expiring.
pub(super) struct RobotsCache {
    states: HashMap<OriginKey, RobotsState>,
    /// Origins with rules, oldest first, for the bound.
    order: VecDeque<(OriginKey, Instant)>,
    max: usize,
    ttl: Duration,
}

impl Default for RobotsCache {
    fn default() -> Self {
        RobotsCache::with_limits(ROBOTS_CACHE_MAX, ROBOTS_CACHE_TTL)
    }
}

impl RobotsCache {
    fn with_limits(max: usize, ttl: Duration) -> Self {
        RobotsCache {
            states: HashMap::new(),
            order: VecDeque::new(),
            max,
            ttl,
        }
    }

    /// The origin's state, or `None` if it was never asked for, was
    /// evicted, or its rules have expired (`expired` tells which: expired
    /// rules are forgotten here).
    pub(super) fn lookup(&mut self, origin: &str, now: Instant) -> Lookup<'_> {
        let k = key(origin);
        let expired = matches!(
            self.states.get(&k),
            Some(RobotsState::Ready(_, at)) if now.saturating_duration_since(*at) > self.ttl
        );
        if expired {
            self.states.remove(&k);
            return Lookup::Expired;
        }
        match self.states.get_mut(&k) {
            Some(state) => Lookup::Known(state),
            None => Lookup::Unknown,
        }
    }

    /// The origin's robots.txt is being fetched; `first` waits for it.
    pub(super) fn start(&mut self, origin: &str, first: Request) {
        self.states
            .insert(key(origin), RobotsState::Pending(vec![Box::new(first)]));
    }

    /// The requests waiting for the origin's robots.txt, if it is pending.
    pub(super) fn waiting(&mut self, origin: &str) -> Option<&mut Vec<Box<Request>>> {
        match self.states.get_mut(&key(origin)) {
            Some(RobotsState::Pending(waiting)) => Some(waiting),
            _ => None,
        }
    }

    /// Forgets a pending origin (known rules stay); returns the requests that waited.
    pub(super) fn abandon(&mut self, origin: &str) -> Vec<Box<Request>> {
        let k = key(origin);
        match self.states.get(&k) {
            Some(RobotsState::Pending(_)) => match self.states.remove(&k) {
                Some(RobotsState::Pending(waiting)) => waiting,
                _ => Vec::new(),
            },
            _ => Vec::new(),
        }
    }

    /// The origin's rules are known: keeps them, evicting the oldest origins
    /// past the bound, and releases the requests that waited for them.
    pub(super) fn ready(&mut self, origin: &str, rules: RobotsRules, now: Instant) -> Released {
        let k = key(origin);
        let waiting = match self.states.remove(&k) {
            Some(RobotsState::Pending(waiting)) => waiting,
            _ => Vec::new(),
        };
        let (allowed, forbidden) = waiting.into_iter().partition(|r| rules.allows(&r.url));
        self.states.insert(k, RobotsState::Ready(rules, now));
        self.order.push_back((k, now));
        let mut evicted = 0;
        while self.order.len() > self.max {
            let Some((old, at)) = self.order.pop_front() else {
                break;
            };
            // Skip entries made stale by a later answer for the same origin.
            if matches!(self.states.get(&old), Some(RobotsState::Ready(_, t)) if *t == at) {
                self.states.remove(&old);
                evicted += 1;
            }
        }
        Released {
            allowed,
            forbidden,
            evicted,
        }
    }
}

/// What [`RobotsCache::ready`] did.
pub(super) struct Released {
    /// Waiting requests the rules allow.
    pub allowed: Vec<Box<Request>>,
    /// Waiting requests the rules forbid.
    pub forbidden: Vec<Box<Request>>,
    /// Origins evicted to keep the bound.
    pub evicted: u64,
}

/// What [`RobotsCache::lookup`] found.
pub(super) enum Lookup<'a> {
    Known(&'a mut RobotsState),
    Unknown,
    /// Its rules were older than the TTL and are forgotten now.
    Expired,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(url: &str) -> Request {
        Request::get(url).unwrap()
    }

    #[test]
    fn pending_then_ready_releases_the_waiting_requests() {
        let mut c = RobotsCache::default();
        let now = Instant::now();
        assert!(matches!(c.lookup("http://a.test", now), Lookup::Unknown));
        c.start("http://a.test", req("http://a.test/1"));
        c.waiting("http://a.test")
            .unwrap()
            .push(Box::new(req("http://a.test/2")));
        assert!(c.waiting("http://b.test").is_none());
        let released = c.ready("http://a.test", RobotsRules::AllowAll, now);
        let urls: Vec<_> = released
            .allowed
            .iter()
            .map(|r| r.url.path().to_string())
            .collect();
        assert_eq!(urls, ["/1", "/2"]);
        assert!(released.forbidden.is_empty());
        assert_eq!(released.evicted, 0);
        assert!(matches!(
            c.lookup("http://a.test", now),
            Lookup::Known(RobotsState::Ready(RobotsRules::AllowAll, _))
        ));
        c.start("http://d.test", req("http://d.test/"));
        let released = c.ready("http://d.test", RobotsRules::DisallowAll, now);
        assert_eq!((released.allowed.len(), released.forbidden.len()), (0, 1));
    }

    #[test]
    fn the_oldest_origins_go_past_the_bound() {
        let mut c = RobotsCache::with_limits(2, ROBOTS_CACHE_TTL);
        let t = Instant::now();
        assert_eq!(
            c.ready("http://a.test", RobotsRules::AllowAll, t).evicted,
            0
        );
        assert_eq!(
            c.ready("http://b.test", RobotsRules::AllowAll, t).evicted,
            0
        );
        // a is answered again: its older place in the order is stale.
        let t2 = t + Duration::from_secs(1);
        assert_eq!(
            c.ready("http://a.test", RobotsRules::DisallowAll, t2)
                .evicted,
            0
        );
        assert_eq!(
            c.ready("http://c.test", RobotsRules::AllowAll, t2).evicted,
            1
        );
        assert!(matches!(c.lookup("http://b.test", t2), Lookup::Unknown));
        assert!(matches!(c.lookup("http://a.test", t2), Lookup::Known(_)));
        assert!(matches!(c.lookup("http://c.test", t2), Lookup::Known(_)));
    }

    #[test]
    fn rules_expire_after_the_ttl_and_pending_ones_do_not() {
        let mut c = RobotsCache::with_limits(10, Duration::from_secs(60));
        let t = Instant::now();
        c.ready("http://a.test", RobotsRules::AllowAll, t);
        c.start("http://b.test", req("http://b.test/"));
        let later = t + Duration::from_secs(61);
        assert!(matches!(c.lookup("http://a.test", later), Lookup::Expired));
        assert!(matches!(c.lookup("http://a.test", later), Lookup::Unknown));
        assert!(matches!(
            c.lookup("http://b.test", later),
            Lookup::Known(RobotsState::Pending(_))
        ));
    }

    #[test]
    fn abandoning_forgets_only_a_pending_origin() {
        let mut c = RobotsCache::default();
        let t = Instant::now();
        c.start("http://a.test", req("http://a.test/"));
        c.ready("http://b.test", RobotsRules::AllowAll, t);
        assert_eq!(c.abandon("http://a.test").len(), 1);
        assert!(matches!(c.lookup("http://a.test", t), Lookup::Unknown));
        assert!(c.abandon("http://b.test").is_empty());
        assert!(matches!(c.lookup("http://b.test", t), Lookup::Known(_)));
    }
}
