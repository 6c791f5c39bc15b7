//! A download slot: the unit politeness is enforced on (a host name, an IP
//! address, or a name a request gives). It caps requests on the wire and
//! spaces request starts by the download delay.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;
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
    active: usize,
    last_start: Option<Instant>,
    /// When the next request may start; `None` for a fresh slot, which starts at once.
    next_start: Option<Instant>,
    /// A robots.txt `Crawl-delay`: no gap, randomized or not, is shorter.
    delay_floor: Duration,
    /// A cap below the policy's, while the slot keeps failing (`SLOT_MAX_EXCEPTIONS`).
    limit: Option<usize>,
    gate: Arc<SendGate>,
    pub stats: SlotStats,
}

/// Spaces request sends in one slot as the engine spaced their starts.
///
/// The engine decides when a request may start, but its download task may
/// run a little later when the I/O threads are busy. Without this gate, a
/// late task and an on-time one could reach the server closer together
/// than the delay. Each task passes the gate just before it sends. The lock
/// is per slot and is held for nanoseconds: waiting happens outside it.
#[derive(Debug, Default)]
pub struct SendGate {
    state: Mutex<GateState>,
}

#[derive(Debug, Default)]
struct GateState {
    last_send: Option<Instant>,
    next_send: Option<Instant>,
}

impl SendGate {
    /// Waits until this slot may send, then records the send and the gap before the next one.
    pub async fn pass(&self, gap: Duration) {
        loop {
            let wait = {
                let mut st = self.state.lock().expect("send gate");
                let now = Instant::now();
                match st.next_send {
                    Some(t) if t > now => t,
                    _ => {
                        st.last_send = Some(now);
                        st.next_send = Some(now + gap);
                        return;
                    }
                }
            };
            tokio::time::sleep_until(wait.into()).await;
        }
    }

    fn raise_floor(&self, floor: Duration) {
        let mut st = self.state.lock().expect("send gate");
        if let Some(last) = st.last_send {
            st.next_send = Some(st.next_send.map_or(last + floor, |t| t.max(last + floor)));
        }
    }
}

/// What a started request carries to its download task: the slot's gate and the gap after it.
#[derive(Debug, Clone)]
pub struct Pacing {
    pub gate: Arc<SendGate>,
    pub gap: Duration,
}

impl Pacing {
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
    /// Downloads that failed (timeouts, connection and DNS errors, …).
    pub errors: u64,
    /// Seconds its requests waited in its queue, in all.
    pub wait_seconds: f64,
}

impl Slot {
    pub fn new(policy: SlotPolicy) -> Self {
        Slot {
            policy,
            active: 0,
            last_start: None,
            next_start: None,
            delay_floor: Duration::ZERO,
            limit: None,
            gate: Arc::default(),
            stats: SlotStats::default(),
        }
    }

    pub fn active(&self) -> usize {
        self.active
    }

    pub fn has_capacity(&self) -> bool {
        self.active
            < self
                .limit
                .map_or(self.policy.concurrency, |l| l.min(self.policy.concurrency))
    }

    /// Caps concurrency below the policy's; `None` lifts the cap.
    pub fn limit_concurrency(&mut self, cap: Option<usize>) {
        self.limit = cap;
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
        let delay = self.policy.delay;
        let mut gap = Duration::ZERO;
        if !delay.is_zero() {
            gap = if self.policy.randomize_delay {
                delay.mul_f64(rng.gen_range(0.5..=1.5))
            } else {
                delay
            };
            gap = gap.max(self.delay_floor);
            self.next_start = Some(now + gap);
        }
        Pacing {
            gate: self.gate.clone(),
            gap,
        }
    }

    /// Applies a robots.txt `Crawl-delay`: it raises the delay and becomes a
    /// floor that randomization never goes below.
    pub fn set_delay_floor(&mut self, floor: Duration) {
        self.delay_floor = floor;
        self.policy.delay = self.policy.delay.max(floor);
        if let Some(last) = self.last_start {
            self.pause_until(last + floor);
        }
        self.gate.raise_floor(floor);
    }

    /// No request starts before `until` (backoff, `Retry-After`).
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
        Slot::new(SlotPolicy {
            concurrency: 2,
            delay: Duration::from_millis(delay_ms),
            randomize_delay: randomize,
        })
    }

    #[test]
    fn fresh_slot_starts_at_once_then_waits_the_delay() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let mut s = slot(100, false);
        let t0 = Instant::now();
        assert_eq!(s.delayed_until(t0), None);
        s.start(t0, &mut rng);
        assert_eq!(s.delayed_until(t0), Some(t0 + Duration::from_millis(100)));
        assert_eq!(s.delayed_until(t0 + Duration::from_millis(100)), None);
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
        first.pass().await;
        second.pass().await;
        assert!(
            begin.elapsed() >= Duration::from_millis(100),
            "{:?}",
            begin.elapsed()
        );
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
            assert!((0.05..=0.15).contains(&gap), "{gap}");
            sum += gap;
        }
        let mean = sum / n as f64;
        assert!((mean - 0.1).abs() < 0.002, "mean gap {mean}");
    }
}
