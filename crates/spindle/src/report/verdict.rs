//! What held the crawl and each slot back at a snapshot, and what to say about it.

use std::collections::BTreeMap;

use super::{CrawlState, Knobs, SlotTrack};
use crate::scheduler::SlotPace;
use crate::settings::ThrottleMode;

/// Why requests were not going faster at one snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Limit {
    /// `CONCURRENT_REQUESTS` was full while some slot could have started.
    GlobalCap,
    /// The slot had its whole per-slot cap on the wire and more queued.
    SlotCap,
    /// The adaptive mode held the slot below its cap.
    AdaptiveConcurrency,
    /// `DOWNLOAD_DELAY` (or `DOWNLOAD_SLOTS` delay) spaced the slot's requests.
    Delay,
    /// AutoThrottle raised the slot's delay above its minimum.
    AutoThrottleDelay,
    /// robots.txt `Crawl-delay` spaced the slot's requests.
    CrawlDelay,
    /// A backoff before a retry, or a `Retry-After`, paused the slot.
    Backoff,
    /// The slot's requests were on the wire and nothing else was queued for it.
    ServerLatency,
    /// The parse backlog was full.
    Parsing,
    /// robots.txt or DNS answers were awaited before requests could be queued.
    Admission,
    /// Nothing was queued or on the wire.
    FrontierDry,
}

impl Limit {
    /// A short name for tables and charts.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Limit::GlobalCap => "global cap (CONCURRENT_REQUESTS)",
            Limit::SlotCap => "per-slot cap",
            Limit::AdaptiveConcurrency => "adaptive concurrency",
            Limit::Delay => "download delay",
            Limit::AutoThrottleDelay => "AutoThrottle delay",
            Limit::CrawlDelay => "robots.txt Crawl-delay",
            Limit::Backoff => "Retry-After / backoff",
            Limit::ServerLatency => "server latency",
            Limit::Parsing => "parsing CPU",
            Limit::Admission => "robots.txt / DNS wait",
            Limit::FrontierDry => "frontier dry",
        }
    }
}

/// What held one slot that has work (queued or on the wire).
pub(crate) fn slot_limit(
    pace: &SlotPace,
    crawl: &CrawlState<'_>,
    mode: Option<ThrottleMode>,
) -> Limit {
    if pace.queued == 0 {
        return Limit::ServerLatency;
    }
    if pace.paused {
        return Limit::Backoff;
    }
    if pace.delayed {
        if mode == Some(ThrottleMode::Delay) && pace.delay > pace.min_delay {
            return Limit::AutoThrottleDelay;
        }
        return if pace.crawl_delay {
            Limit::CrawlDelay
        } else {
            Limit::Delay
        };
    }
    if pace.active >= pace.limit {
        return if pace.limit < pace.cap {
            Limit::AdaptiveConcurrency
        } else {
            Limit::SlotCap
        };
    }
    // It could start: something crawl-wide holds it.
    if crawl.parse_full {
        Limit::Parsing
    } else {
        Limit::GlobalCap
    }
}

/// What held the crawl as a whole: the crawl-wide limits first, then the
/// limit holding back the most queued requests.
pub(crate) fn crawl_limit(
    crawl: &CrawlState<'_>,
    any_ready: bool,
    held: &BTreeMap<Limit, u64>,
) -> Limit {
    if crawl.parse_full && any_ready {
        return Limit::Parsing;
    }
    if crawl.global_full && any_ready {
        return Limit::GlobalCap;
    }
    if let Some((limit, _)) = held.iter().max_by_key(|(_, n)| **n) {
        return *limit;
    }
    if crawl.in_flight > 0 {
        Limit::ServerLatency
    } else if crawl.admission_waiting {
        Limit::Admission
    } else {
        Limit::FrontierDry
    }
}

fn ms(v: f64) -> String {
    format!("{v:.0} ms")
}

fn secs(d: std::time::Duration) -> String {
    format!("{:.3} s", d.as_secs_f64())
}

/// What to change about `limit`, and what it would cost the site; for a
/// slot when `slot` is given, else for the crawl.
pub(crate) fn advice(limit: Limit, knobs: &Knobs, slot: Option<&SlotTrack>) -> String {
    let key = slot.map_or("the busiest sites".to_string(), |s| s.key.clone());
    let pace = slot.and_then(|s| s.last);
    let per_slot_name = if knobs.per_ip {
        "CONCURRENT_REQUESTS_PER_IP"
    } else {
        "CONCURRENT_REQUESTS_PER_DOMAIN"
    };
    match limit {
        Limit::GlobalCap => format!(
            "Slots with queued work could have started but CONCURRENT_REQUESTS ({}) was full. \
             Raise it (for example to {}). Each site still gets at most its per-slot cap ({}) \
             at once, so the extra load is spread over the sites.",
            knobs.concurrent_requests,
            knobs.concurrent_requests * 2,
            knobs.per_slot
        ),
        Limit::SlotCap => {
            let cap = pace.map_or(knobs.per_slot, |p| p.cap);
            let mut s = format!(
                "{key} had its whole cap of {cap} requests on the wire with more queued. \
                 Raising {per_slot_name} to {} would send up to {} requests at a time to {key}",
                cap * 2,
                cap * 2
            );
            if let Some(t) = slot {
                let low = (1..=cap).find_map(|n| t.latency_at(n).map(|l| (n, l)));
                let high = (1..=cap)
                    .rev()
                    .find_map(|n| t.latency_at(n).map(|l| (n, l)));
                if let (Some((n1, l1)), Some((n2, l2))) = (low, high) {
                    if n2 > n1 {
                        let verdict = if l2 > 1.5 * l1 {
                            "it already slows down under load, so expect less than double"
                        } else {
                            "it has not slowed down so far"
                        };
                        s += &format!(
                            ", whose latency went from {} at {n1} in flight to {} at {n2}: {verdict}",
                            ms(l1),
                            ms(l2)
                        );
                    }
                }
            }
            s + "."
        }
        Limit::AdaptiveConcurrency => format!(
            "The adaptive mode held {key} at {} of its cap of {} because its latency rose \
             above its latency with no queue: the site's own capacity is the limit. Raising \
             the cap would not help; it would only queue requests at the site.",
            pace.map_or(0, |p| p.limit),
            pace.map_or(knobs.per_slot, |p| p.cap)
        ),
        Limit::Delay => {
            let d = pace.map_or(knobs.download_delay, |p| p.delay);
            format!(
                "DOWNLOAD_DELAY ({}) spaced the requests to {key}: at most {:.1} a second. \
                 Halving it would double the rate of requests the site gets.",
                secs(d),
                1.0 / d.as_secs_f64().max(1e-9)
            )
        }
        Limit::AutoThrottleDelay => {
            let d = pace.map(|p| p.delay).unwrap_or_default();
            let t = knobs.target_concurrency;
            format!(
                "AutoThrottle set the delay of {key} to {} (its latency / \
                 AUTOTHROTTLE_TARGET_CONCURRENCY = {t}). Raising the target to {} would keep \
                 about {} requests in flight at {key}, and its latency rises if it is loaded; \
                 AUTOTHROTTLE_MAX_DELAY caps the delay.",
                secs(d),
                t * 2.0,
                t * 2.0
            )
        }
        Limit::CrawlDelay => {
            let d = pace.map(|p| p.min_delay).unwrap_or_default();
            format!(
                "The robots.txt of {key} asks for a Crawl-delay of {}: at most {:.2} requests \
                 a second. Only ROBOTSTXT_CRAWL_DELAY_MAX (or ROBOTSTXT_OBEY=false) shortens \
                 it, against the site's stated wish.",
                secs(d),
                1.0 / d.as_secs_f64().max(1e-9)
            )
        }
        Limit::Backoff => format!(
            "{key} was paused by Retry-After or a retry backoff ({} answers were 429 or 503). \
             The site is asking for less: lower {per_slot_name} or set AUTOTHROTTLE_ENABLED. \
             RETRY_AFTER_MAX and RETRY_BACKOFF_BASE shorten the pauses, at the cost of \
             ignoring the site.",
            slot.map_or(0, |s| s.overloads)
        ),
        Limit::ServerLatency => {
            let p50 = slot
                .and_then(SlotTrack::latency_percentiles)
                .map(|p| format!(" (median {})", ms(p[0])))
                .unwrap_or_default();
            format!(
                "Requests to {key} were waiting on the server{p50} with nothing else queued: \
                 the crawl finds pages as fast as the server answers. More start URLs or \
                 sites would help; more concurrency would not. This costs the site nothing."
            )
        }
        Limit::Parsing => "The parse backlog was full: parsing CPU held back downloads. \
             --processes N parses in N processes; this costs the sites nothing."
            .to_string(),
        Limit::Admission => "Requests waited for robots.txt or DNS answers before they could \
             be queued."
            .to_string(),
        Limit::FrontierDry => "Nothing was queued or on the wire: the crawl ran out of \
             pages to fetch."
            .to_string(),
    }
}

impl SlotTrack {
    /// The limit this slot spent the most snapshots under, with its share.
    pub(crate) fn main_limit(&self) -> Option<(Limit, f64)> {
        let total: u64 = self.limits.values().sum();
        self.limits
            .iter()
            .max_by_key(|(_, n)| **n)
            .map(|(l, n)| (*l, *n as f64 / total.max(1) as f64))
    }

    /// p50, p90, p99 of its latency in ms.
    pub(crate) fn latency_summary(&self) -> Option<[f64; 3]> {
        self.latency_percentiles()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn pace() -> SlotPace {
        SlotPace {
            delay: Duration::ZERO,
            min_delay: Duration::ZERO,
            limit: 8,
            cap: 8,
            active: 8,
            queued: 10,
            delayed: false,
            paused: false,
            crawl_delay: false,
        }
    }

    fn crawl(stats: &crate::stats::Stats) -> CrawlState<'_> {
        CrawlState {
            pages: 0,
            in_flight: 8,
            queued: 10,
            global_full: false,
            parse_full: false,
            admission_waiting: false,
            downloads: stats,
            middlewares: stats,
        }
    }

    #[test]
    fn each_slot_state_names_its_limit() {
        let stats = crate::stats::Stats::default();
        let c = crawl(&stats);
        assert_eq!(slot_limit(&pace(), &c, None), Limit::SlotCap);
        let adaptive = SlotPace {
            limit: 3,
            active: 3,
            ..pace()
        };
        assert_eq!(slot_limit(&adaptive, &c, None), Limit::AdaptiveConcurrency);
        let paused = SlotPace {
            paused: true,
            delayed: true,
            ..pace()
        };
        assert_eq!(slot_limit(&paused, &c, None), Limit::Backoff);
        let delayed = SlotPace {
            delayed: true,
            active: 1,
            ..pace()
        };
        assert_eq!(slot_limit(&delayed, &c, None), Limit::Delay);
        let crawl_delay = SlotPace {
            crawl_delay: true,
            ..delayed
        };
        assert_eq!(slot_limit(&crawl_delay, &c, None), Limit::CrawlDelay);
        let throttled = SlotPace {
            delay: Duration::from_secs(1),
            ..delayed
        };
        assert_eq!(
            slot_limit(&throttled, &c, Some(ThrottleMode::Delay)),
            Limit::AutoThrottleDelay
        );
        let ready = SlotPace {
            active: 2,
            ..pace()
        };
        assert_eq!(slot_limit(&ready, &c, None), Limit::GlobalCap);
        let drained = SlotPace {
            queued: 0,
            ..pace()
        };
        assert_eq!(slot_limit(&drained, &c, None), Limit::ServerLatency);
    }

    #[test]
    fn the_crawl_is_held_by_what_holds_most_queued_requests() {
        let stats = crate::stats::Stats::default();
        let mut c = crawl(&stats);
        let held = BTreeMap::from([(Limit::SlotCap, 5), (Limit::Delay, 50)]);
        assert_eq!(crawl_limit(&c, false, &held), Limit::Delay);
        c.global_full = true;
        assert_eq!(crawl_limit(&c, true, &held), Limit::GlobalCap);
        c.global_full = false;
        c.in_flight = 0;
        assert_eq!(crawl_limit(&c, false, &BTreeMap::new()), Limit::FrontierDry);
    }
}
