//! A download slot: the unit politeness is enforced on (a host name, an IP
//! address, or a name a request gives). It caps requests on the wire and
//! spaces request starts by the download delay.

use std::time::{Duration, Instant};

use rand::Rng;

pub use super::gate::SendGate;
use serde::Serialize;

/// How a slot behaves, fixed when the slot is created (as in Scrapy).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SlotPolicy {
    pub concurrency: usize,
    pub delay: Duration,
    pub randomize_delay: bool,
}

/// A slot's politeness state and the figures it reports.
#[derive(Debug)]
pub struct Slot {
    pub policy: SlotPolicy,
    /// The delay in force: the policy's, unless a `Crawl-delay` or AutoThrottle moved it.
    delay: Duration,
    /// The concurrency in force: the policy's cap, unless the adaptive mode lowered it.
    limit: usize,
    active: usize,
    last_start: Option<Instant>,
    /// When the next request may start; `None` for a fresh slot, which starts at once.
    next_start: Option<Instant>,
    /// A robots.txt `Crawl-delay`: no gap, randomized or not, is shorter.
    delay_floor: Duration,
    /// The end of the latest backoff or `Retry-After` pause, for the report.
    paused_until: Option<Instant>,
    /// A cap below the one in force, while the slot keeps failing (`SLOT_MAX_EXCEPTIONS`).
    failure_cap: Option<usize>,
    gate: SendGate,
    pub stats: SlotStats,
}

/// What a started request carries to its download task: the slot's gate,
/// the gap drawn after it, and the shortest gap allowed at the wire (the
/// gap itself with a fixed delay; half the delay, or the `Crawl-delay`, with
/// a randomized one).
#[derive(Debug, Clone)]
pub struct Pacing {
    pub gate: SendGate,
    pub gap: Duration,
    pub floor: Duration,
}

impl Pacing {
    #[cfg(test)]
    pub async fn pass(&self) {
        self.gate.pass(self.gap).await;
    }
}

/// What one slot saw, reported beside Scrapy's stats.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct SlotStats {
    /// Requests started in this slot.
    pub requests: u64,
    /// The most requests this slot had on the wire at once.
    pub max_in_flight: usize,
    /// Shortest time between two request starts, in seconds; none with fewer than two requests.
    pub min_start_gap_seconds: Option<f64>,
    /// Shortest time between two sends through the slot's [`SendGate`], in
    /// seconds: the crawler's own account of its spacing, to compare with
    /// the arrival times a server records. None with fewer than two sends.
    pub min_send_gap_seconds: MinGap,
    /// Downloads that failed (timeouts, connection and DNS errors, …).
    pub errors: u64,
    /// Seconds its requests waited in its queue, in all.
    pub wait_seconds: f64,
}

/// The shortest gap between two passes of a slot's gate, read from the gate
/// when stats are reported (in multi-process mode the workers pass it).
#[derive(Debug, Clone, Default)]
pub struct MinGap(SendGate);

impl MinGap {
    /// The gap in seconds; none with fewer than two sends.
    pub fn seconds(&self) -> Option<f64> {
        self.0.min_gap().map(|d| d.as_secs_f64())
    }
}

impl PartialEq for MinGap {
    fn eq(&self, other: &Self) -> bool {
        self.seconds() == other.seconds()
    }
}

impl Serialize for MinGap {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.seconds().serialize(s)
    }
}

impl Slot {
    /// A fresh slot whose sends pass `gate`.
    pub fn new(policy: SlotPolicy, gate: SendGate) -> Self {
        let stats = SlotStats {
            min_send_gap_seconds: MinGap(gate.clone()),
            ..SlotStats::default()
        };
        Slot {
            policy,
            delay: policy.delay,
            limit: policy.concurrency,
            active: 0,
            last_start: None,
            next_start: None,
            delay_floor: Duration::ZERO,
            paused_until: None,
            failure_cap: None,
            gate,
            stats,
        }
    }

    pub fn active(&self) -> usize {
        self.active
    }

    pub fn has_capacity(&self) -> bool {
        self.active < self.limit.min(self.failure_cap.unwrap_or(usize::MAX))
    }

    /// The delay in force.
    pub fn delay(&self) -> Duration {
        self.delay
    }

    /// The smallest delay allowed: the configured one, or a larger `Crawl-delay`.
    pub fn min_delay(&self) -> Duration {
        self.policy.delay.max(self.delay_floor)
    }

    /// Requests allowed on the wire at once now (at most the policy's cap).
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Sets the delay in force (AutoThrottle), never below [`Slot::min_delay`].
    /// A raise applies to the gap already drawn, so it takes effect at once.
    pub fn set_delay(&mut self, delay: Duration) {
        let delay = delay.max(self.min_delay());
        let old = self.delay;
        self.delay = delay;
        if delay <= old {
            return;
        }
        if let Some(last) = self.last_start {
            let until = match self.next_start {
                Some(next) if !old.is_zero() => {
                    let drawn = next.duration_since(last);
                    last + drawn.mul_f64(delay.as_secs_f64() / old.as_secs_f64())
                }
                _ => last + delay,
            };
            self.pause_until(until);
        }
    }

    /// Sets the concurrency in force (adaptive mode), within 1 and the policy's cap.
    pub fn set_limit(&mut self, limit: usize) {
        self.limit = limit.clamp(1, self.policy.concurrency.max(1));
    }

    /// Caps concurrency below the one in force while the slot keeps failing; `None` lifts the cap.
    pub fn limit_concurrency(&mut self, cap: Option<usize>) {
        self.failure_cap = cap;
    }

    /// The robots.txt `Crawl-delay` floor, zero when none.
    pub fn delay_floor(&self) -> Duration {
        self.delay_floor
    }

    /// When the delay lets the next request start: `None` means now.
    pub fn delayed_until(&self, now: Instant) -> Option<Instant> {
        self.next_start.filter(|t| *t > now)
    }

    /// Records a request start and draws the gap before the next one, which
    /// it returns with the gate the request's send must pass.
    ///
    /// The gap is drawn once per start, so with randomization the mean gap is
    /// the delay itself (Scrapy redraws on every timer and drifts to ~1.22×).
    pub fn start(&mut self, now: Instant, rng: &mut impl Rng) -> Pacing {
        self.active += 1;
        self.stats.requests += 1;
        self.stats.max_in_flight = self.stats.max_in_flight.max(self.active);
        if let Some(last) = self.last_start {
            let gap = now.duration_since(last).as_secs_f64();
            let min = self.stats.min_start_gap_seconds.get_or_insert(gap);
            *min = min.min(gap);
        }
        self.last_start = Some(now);
        let delay = self.delay;
        let mut gap = Duration::ZERO;
        let mut floor = Duration::ZERO;
        if !delay.is_zero() {
            gap = if self.policy.randomize_delay {
                delay.mul_f64(rng.gen_range(0.5..=1.5))
            } else {
                delay
            };
            gap = gap.max(self.delay_floor);
            floor = if self.policy.randomize_delay {
                (delay / 2).max(self.delay_floor).min(gap)
            } else {
                gap
            };
            // A start that came late (the loop woke late) counts from when
            // it was due, down to the floor, so lateness does not add up
            // from start to start: the send gate does the same at the socket.
            let base = match self.next_start {
                Some(due) if due <= now && now - due < super::gate::catch_up_window(floor) => due,
                _ => now,
            };
            self.next_start = Some((base + gap).max(now + floor));
        }
        Pacing {
            gate: self.gate.clone(),
            gap,
            floor,
        }
    }

    /// Applies a robots.txt `Crawl-delay`: it raises the delay and becomes a
    /// floor that randomization never goes below.
    pub fn set_delay_floor(&mut self, floor: Duration) {
        self.delay_floor = floor;
        self.delay = self.delay.max(floor);
        if let Some(last) = self.last_start {
            self.pause_until(last + floor);
        }
        self.gate.raise_floor(floor);
    }

    /// A backoff or `Retry-After` pause: no request starts before `until`.
    pub fn pause(&mut self, until: Instant) {
        self.paused_until = Some(self.paused_until.map_or(until, |t| t.max(until)));
        self.pause_until(until);
    }

    /// Whether a backoff or `Retry-After` pause holds the slot at `now`.
    pub fn is_paused(&self, now: Instant) -> bool {
        self.paused_until.is_some_and(|t| t > now)
    }

    /// Whether a robots.txt `Crawl-delay` sets the minimum delay.
    pub fn crawl_delay_binds(&self) -> bool {
        self.delay_floor > self.policy.delay
    }

    /// No request starts before `until`.
    pub fn pause_until(&mut self, until: Instant) {
        self.next_start = Some(self.next_start.map_or(until, |t| t.max(until)));
    }

    pub fn finish(&mut self) {
        self.active = self.active.saturating_sub(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn slot(delay_ms: u64, randomize: bool) -> Slot {
        Slot::new(
            SlotPolicy {
                concurrency: 2,
                delay: Duration::from_millis(delay_ms),
                randomize_delay: randomize,
            },
            SendGate::default(),
        )
    }

    #[test]
    fn a_late_start_counts_from_when_it_was_due_only_with_a_randomized_delay() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let t0 = Instant::now();
        let late = Duration::from_millis(20);
        // Fixed: the next start is a whole delay after the late one.
        let mut fixed = slot(100, false);
        fixed.start(t0, &mut rng);
        let due = t0 + Duration::from_millis(100);
        let p = fixed.start(due + late, &mut rng);
        assert_eq!(p.floor, p.gap);
        assert_eq!(fixed.delayed_until(due), Some(due + late + p.gap));
        // Randomized: a gap after it was due, never under half the delay after it.
        let mut random = slot(100, true);
        let p0 = random.start(t0, &mut rng);
        let due = t0 + p0.gap;
        let p = random.start(due + late, &mut rng);
        assert_eq!(p.floor, Duration::from_millis(50));
        let expected = (due + p.gap).max(due + late + p.floor);
        assert_eq!(random.delayed_until(due), Some(expected));
    }

    #[test]
    fn fresh_slot_starts_at_once_then_waits_the_delay() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let mut s = slot(100, false);
        let t0 = Instant::now();
        assert_eq!(s.delayed_until(t0), None);
        s.start(t0, &mut rng);
        let next = t0 + Duration::from_millis(100);
        assert_eq!(s.delayed_until(t0), Some(next));
        assert_eq!(s.delayed_until(next), None);
    }

    #[test]
    fn crawl_delay_is_a_floor_under_randomization() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let mut s = slot(100, true);
        s.set_delay_floor(Duration::from_millis(100));
        let t0 = Instant::now();
        for _ in 0..1000 {
            s.start(t0, &mut rng);
            let gap = s.delayed_until(t0).unwrap().duration_since(t0);
            assert!(gap >= Duration::from_millis(100), "{gap:?}");
        }
    }

    #[test]
    fn pauses_only_push_the_next_start_later() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let mut s = slot(100, false);
        let t0 = Instant::now();
        s.pause_until(t0 + Duration::from_secs(2));
        assert_eq!(s.delayed_until(t0), Some(t0 + Duration::from_secs(2)));
        s.pause_until(t0 + Duration::from_secs(1));
        assert_eq!(s.delayed_until(t0), Some(t0 + Duration::from_secs(2)));
        s.start(t0 + Duration::from_secs(2), &mut rng);
        assert_eq!(s.delayed_until(t0), Some(t0 + Duration::from_millis(2100)));
    }

    #[tokio::test]
    async fn the_gate_spaces_sends_started_together() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let mut s = slot(100, false);
        let t0 = Instant::now();
        // Two starts the engine spaced correctly, whose tasks then ran at the same moment.
        let first = s.start(t0, &mut rng);
        let second = s.start(t0 + Duration::from_millis(100), &mut rng);
        let begin = tokio::time::Instant::now();
        assert_eq!(s.stats.min_send_gap_seconds.seconds(), None);
        first.pass().await;
        second.pass().await;
        assert!(
            begin.elapsed() >= Duration::from_millis(100),
            "{:?}",
            begin.elapsed()
        );
        let gap = s.stats.min_send_gap_seconds.seconds().unwrap();
        assert!(gap >= 0.1, "the stats report the gate's gap: {gap}");
    }

    #[test]
    fn autothrottle_moves_the_delay_but_never_below_the_floor() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let mut s = slot(100, false);
        s.set_delay(Duration::from_millis(10));
        assert_eq!(
            s.delay(),
            Duration::from_millis(100),
            "DOWNLOAD_DELAY is the minimum"
        );
        s.set_delay_floor(Duration::from_millis(300));
        s.set_delay(Duration::from_millis(200));
        assert_eq!(
            s.delay(),
            Duration::from_millis(300),
            "Crawl-delay is the minimum"
        );
        let t0 = Instant::now();
        s.start(t0, &mut rng);
        // A raise applies to the gap already drawn.
        s.set_delay(Duration::from_millis(900));
        assert_eq!(s.delayed_until(t0), Some(t0 + Duration::from_millis(900)));
    }

    #[test]
    fn the_adaptive_limit_stays_within_one_and_the_cap() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let mut s = slot(0, false);
        s.set_limit(0);
        assert_eq!(s.limit(), 1);
        s.start(Instant::now(), &mut rng);
        assert!(!s.has_capacity());
        s.set_limit(50);
        assert_eq!(s.limit(), 2, "the cap");
        assert!(s.has_capacity());
    }

    #[test]
    fn capacity_counts_active_requests() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let mut s = slot(0, false);
        let t = Instant::now();
        s.start(t, &mut rng);
        s.start(t, &mut rng);
        assert!(!s.has_capacity());
        assert_eq!(s.stats.max_in_flight, 2);
        s.finish();
        assert!(s.has_capacity());
    }

    #[test]
    fn randomized_gaps_stay_in_range_with_mean_at_the_delay() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut s = slot(100, true);
        let t0 = Instant::now();
        let n = 20_000;
        let mut sum = 0.0;
        for _ in 0..n {
            s.start(t0, &mut rng);
            let gap = s
                .delayed_until(t0)
                .unwrap()
                .duration_since(t0)
                .as_secs_f64();
            let drawn = gap;
            assert!((0.05..=0.15).contains(&drawn), "{drawn}");
            sum += drawn;
        }
        let mean = sum / n as f64;
        assert!((mean - 0.1).abs() < 0.002, "mean gap {mean}");
    }
}
