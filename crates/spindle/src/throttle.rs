//! AutoThrottle's arithmetic, kept pure so its rules can be pinned by tests:
//! Scrapy's delay algorithm ([`DelayRule`]) and the adaptive concurrency
//! limit ([`AdaptiveLimit`]). The engine part that applies them to slots is
//! `engine/throttle.rs`.
//!
//! Latency here is what Scrapy's AutoThrottle uses: from sending the request
//! to receiving the response headers (`Response::headers_latency`, measured in
//! `downloader::Downloader::fetch`), not until the body has arrived.

use std::time::Duration;

/// The settings that bound Scrapy's delay algorithm.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct DelayRule {
    /// `AUTOTHROTTLE_TARGET_CONCURRENCY`.
    pub target_concurrency: f64,
    /// `AUTOTHROTTLE_MAX_DELAY`.
    pub max_delay: Duration,
}

/// The smallest delay a 429 or 503 raises a slot to, so that a zero delay rises too.
pub(crate) const OVERLOAD_MIN_DELAY: Duration = Duration::from_millis(100);

/// Whether a status says the server is overloaded (429 Too Many Requests, 503 Unavailable).
pub(crate) fn is_overload(status: u16) -> bool {
    status == 429 || status == 503
}

impl DelayRule {
    /// Scrapy's `AutoThrottle._adjust_delay`, for one response of a slot
    /// whose delay is `current` and whose smallest delay is `min`
    /// (`DOWNLOAD_DELAY`, or a robots.txt `Crawl-delay`):
    /// 1. target = latency / target concurrency;
    /// 2. next = the mean of the current delay and the target, but never below
    ///    the target (a rising target is taken at once, a falling one halfway);
    /// 3. next is kept within [min, `AUTOTHROTTLE_MAX_DELAY`];
    /// 4. a response other than 200 never lowers the delay (error pages are
    ///    small and fast, and would otherwise speed the crawl up).
    ///
    /// Beyond Scrapy, a 429 or 503 doubles the delay at once (at least to
    /// 100 ms), within the max.
    pub fn next_delay(
        &self,
        current: Duration,
        min: Duration,
        latency: Duration,
        status: u16,
    ) -> Duration {
        let max = self.max_delay.max(min);
        if is_overload(status) {
            let raised = (current * 2).max(OVERLOAD_MIN_DELAY).min(max);
            return raised.max(current).max(min);
        }
        let target = latency.as_secs_f64() / self.target_concurrency;
        let mean = (current.as_secs_f64() + target) / 2.0;
        let next = Duration::from_secs_f64(mean.max(target)).max(min).min(max);
        if status != 200 && next <= current {
            return current;
        }
        next
    }
}

/// The bounds of the adaptive mode's queue estimate: below `ALPHA` requests
/// waiting at the server the limit grows, above `BETA` it shrinks.
const ALPHA: f64 = 0.5;
const BETA: f64 = 0.9;
/// How many rounds the base (no-queue) latency is remembered for.
const BASE_ROUNDS: usize = 24;

/// One slot's concurrency limit in adaptive mode, in the spirit of TCP Vegas.
///
/// Latency samples are taken in rounds of about `limit` responses (one
/// round trip's worth). At the end of a round, the requests waiting at the
/// server are estimated as `limit × (1 − base / mean)`, where `mean` is the
/// round's mean latency and `base` the lowest round mean of the recent
/// rounds (the latency with no queue). The limit then
/// - doubles while in slow start, or grows by one, when fewer than 0.5
///   requests wait and the slot did use its whole limit;
/// - shrinks by one when more than 0.9 wait;
/// - halves at once on a 429, a 503 or a network error (and slow start ends),
///   once per round: the other answers to requests sent before the cut do not
///   cut it again.
///
/// After a change, one round is skipped: its responses answer requests sent
/// under the old limit. The limit stays within [1, cap].
#[derive(Debug, Clone)]
pub(crate) struct AdaptiveLimit {
    limit: usize,
    cap: usize,
    slow_start: bool,
    /// Latency sum and count of the current round.
    sum: f64,
    count: usize,
    /// Whether the slot had `limit` requests on the wire during the round.
    saturated: bool,
    /// Whether this round's samples are to be ignored (the round after a change).
    settling: bool,
    /// Whether the limit was cut for an error and no round has ended since.
    cut: bool,
    /// The mean latency of recent rounds, newest last.
    rounds: std::collections::VecDeque<f64>,
}

impl AdaptiveLimit {
    /// Starts at 1 request at a time, in slow start, under `cap`.
    pub fn new(cap: usize) -> Self {
        AdaptiveLimit {
            limit: 1,
            cap: cap.max(1),
            slow_start: true,
            sum: 0.0,
            count: 0,
            saturated: false,
            settling: false,
            cut: false,
            rounds: Default::default(),
        }
    }

    /// The current limit.
    #[cfg(test)]
    pub fn limit(&self) -> usize {
        self.limit
    }

    fn base(&self) -> Option<f64> {
        self.rounds.iter().copied().reduce(f64::min)
    }

    /// A response arrived `latency` after its request was sent, while the
    /// slot had `in_flight` requests on the wire (this one included).
    /// Returns the new limit when it changed.
    pub fn on_response(
        &mut self,
        latency: Duration,
        status: u16,
        in_flight: usize,
    ) -> Option<usize> {
        if is_overload(status) {
            return self.on_error();
        }
        self.saturated |= in_flight >= self.limit;
        self.sum += latency.as_secs_f64();
        self.count += 1;
        if self.count < self.limit.max(2) {
            return None;
        }
        let mean = self.sum / self.count as f64;
        let (saturated, settling) = (self.saturated, self.settling);
        self.sum = 0.0;
        self.count = 0;
        self.saturated = false;
        self.settling = false;
        self.cut = false;
        if settling {
            return None;
        }
        self.rounds.push_back(mean);
        if self.rounds.len() > BASE_ROUNDS {
            self.rounds.pop_front();
        }
        let base = self.base().unwrap_or(mean);
        let queue = if mean > 0.0 {
            self.limit as f64 * (1.0 - base / mean)
        } else {
            0.0
        };
        let next = if queue < ALPHA {
            if !saturated {
                return None;
            }
            if self.slow_start {
                self.limit * 2
            } else {
                self.limit + 1
            }
        } else if queue > BETA {
            self.slow_start = false;
            self.limit.saturating_sub(1)
        } else {
            return None;
        };
        self.set(next)
    }

    /// A 429, a 503 or a network error: the limit halves at once.
    pub fn on_error(&mut self) -> Option<usize> {
        self.slow_start = false;
        if self.cut {
            return None;
        }
        let changed = self.set(self.limit / 2);
        self.cut = true;
        changed
    }

    fn set(&mut self, next: usize) -> Option<usize> {
        let next = next.clamp(1, self.cap);
        if next == self.limit {
            return None;
        }
        self.limit = next;
        self.sum = 0.0;
        self.count = 0;
        self.saturated = false;
        self.settling = true;
        Some(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn rule(target: f64, max_ms: u64) -> DelayRule {
        DelayRule {
            target_concurrency: target,
            max_delay: MS * max_ms as u32,
        }
    }

    #[test]
    fn a_rising_target_is_taken_at_once() {
        // latency 800 ms, target concurrency 2 → target delay 400 ms > current 100 ms.
        let d = rule(2.0, 60_000).next_delay(MS * 100, Duration::ZERO, MS * 800, 200);
        assert_eq!(d, MS * 400);
    }

    #[test]
    fn a_falling_target_is_taken_halfway() {
        // current 1000 ms, target 200 ms → the mean, 600 ms.
        let d = rule(1.0, 60_000).next_delay(MS * 1000, Duration::ZERO, MS * 200, 200);
        assert_eq!(d, MS * 600);
    }

    #[test]
    fn the_delay_stays_between_the_minimum_and_the_max() {
        let r = rule(1.0, 2_000);
        assert_eq!(
            r.next_delay(MS * 1000, Duration::ZERO, MS * 9000, 200),
            MS * 2000
        );
        // DOWNLOAD_DELAY (or Crawl-delay) is the floor.
        assert_eq!(r.next_delay(MS * 500, MS * 500, MS * 10, 200), MS * 500);
        // A minimum above the max wins: politeness the user asked for is never cut.
        assert_eq!(r.next_delay(MS * 3000, MS * 3000, MS * 10, 200), MS * 3000);
    }

    #[test]
    fn non_200_responses_never_lower_the_delay() {
        let r = rule(1.0, 60_000);
        assert_eq!(
            r.next_delay(MS * 1000, Duration::ZERO, MS * 10, 404),
            MS * 1000
        );
        assert_eq!(
            r.next_delay(MS * 1000, Duration::ZERO, MS * 10, 500),
            MS * 1000
        );
        // ... but may raise it.
        assert_eq!(
            r.next_delay(MS * 100, Duration::ZERO, MS * 300, 404),
            MS * 300
        );
    }

    #[test]
    fn overload_doubles_the_delay_within_the_max() {
        let r = rule(1.0, 1_000);
        assert_eq!(
            r.next_delay(MS * 300, Duration::ZERO, MS * 1, 503),
            MS * 600
        );
        assert_eq!(
            r.next_delay(MS * 600, Duration::ZERO, MS * 1, 429),
            MS * 1000
        );
        assert_eq!(
            r.next_delay(Duration::ZERO, Duration::ZERO, MS * 1, 429),
            MS * 100
        );
    }

    #[test]
    fn converges_to_latency_over_target() {
        let r = rule(4.0, 60_000);
        let mut d = Duration::from_secs(5);
        for _ in 0..40 {
            d = r.next_delay(d, Duration::ZERO, MS * 400, 200);
        }
        assert!((d.as_secs_f64() - 0.1).abs() < 1e-6, "{d:?}");
    }

    /// Feeds rounds of responses from a server that serves `k` at a time,
    /// each for `s`: with `c` on the wire, latency is s × max(1, c / k).
    fn run(limit: &mut AdaptiveLimit, k: usize, rounds: usize) -> Vec<usize> {
        let s = 0.1;
        let mut seen = Vec::new();
        for _ in 0..rounds {
            let c = limit.limit();
            let latency = s * (c as f64 / k as f64).max(1.0);
            for _ in 0..c.max(2) {
                limit.on_response(Duration::from_secs_f64(latency), 200, c);
            }
            seen.push(limit.limit());
        }
        seen
    }

    #[test]
    fn adaptive_finds_the_servers_capacity_and_stays_near_it() {
        let mut limit = AdaptiveLimit::new(32);
        let seen = run(&mut limit, 6, 60);
        let tail = &seen[20..];
        assert!(tail.iter().all(|c| (6..=7).contains(c)), "{seen:?}");
    }

    #[test]
    fn adaptive_stays_within_one_and_the_cap() {
        let mut limit = AdaptiveLimit::new(4);
        let seen = run(&mut limit, 100, 30);
        assert_eq!(*seen.last().unwrap(), 4, "{seen:?}");
        assert!(seen.iter().all(|c| *c <= 4));
        for _ in 0..4 {
            limit.on_error();
            // One round's answers end the round the cut began.
            for _ in 0..limit.limit().max(2) {
                limit.on_response(MS * 100, 200, 4);
            }
        }
        assert_eq!(limit.limit(), 1);
    }

    #[test]
    fn adaptive_halves_on_overload_and_leaves_slow_start() {
        let mut limit = AdaptiveLimit::new(32);
        run(&mut limit, 100, 8);
        let before = limit.limit();
        assert!(before >= 16, "{before}");
        assert_eq!(limit.on_response(MS * 100, 503, before), Some(before / 2));
        // Answers to requests sent before the cut do not cut again.
        assert_eq!(limit.on_response(MS * 100, 503, before), None);
        assert_eq!(limit.limit(), before / 2);
        // Growth is now one at a time.
        let after = run(&mut limit, 100, 4);
        assert!(after.iter().all(|c| *c <= before / 2 + 2), "{after:?}");
    }

    #[test]
    fn adaptive_does_not_grow_when_the_slot_does_not_use_its_limit() {
        let mut limit = AdaptiveLimit::new(32);
        for _ in 0..100 {
            limit.on_response(MS * 100, 200, 0);
        }
        assert_eq!(limit.limit(), 1);
    }
}
