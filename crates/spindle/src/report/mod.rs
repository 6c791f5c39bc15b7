//! `--report FILE.html`: what the crawl did over time and what limited it.
//!
//! The engine hands the [`Recorder`] a snapshot of its parts every quarter
//! second, and every response's latency. The recorder keeps a bounded time
//! series (it halves its resolution when it grows long), per-slot figures,
//! and, at each snapshot, *why* the crawl and each busy slot were not going
//! faster. The file is rewritten every few seconds during the crawl and once
//! at its end: one self-contained HTML page with inline SVG charts and no
//! scripts, fonts or images from anywhere.

mod html;
mod verdict;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::scheduler::{SlotId, SlotPace};

pub(crate) use verdict::Limit;

/// How often the engine takes a snapshot, at first.
pub(crate) const SAMPLE_EVERY: Duration = Duration::from_millis(250);
/// How often the file is rewritten during the crawl.
const WRITE_EVERY: Duration = Duration::from_secs(2);
/// Past this many samples, every other one is dropped and the period doubles.
const MAX_SAMPLES: usize = 1200;
/// Slots whose per-sample figures are kept at each snapshot (the busiest).
const SLOTS_PER_SAMPLE: usize = 24;
/// Latency samples kept per slot for its percentiles (a reservoir beyond it).
const LATENCIES_PER_SLOT: usize = 4096;

/// The crawl-wide part of a snapshot.
pub(crate) struct CrawlState<'a> {
    pub pages: u64,
    pub in_flight: usize,
    pub queued: usize,
    /// `CONCURRENT_REQUESTS` is reached.
    pub global_full: bool,
    /// The parse backlog holds back downloads.
    pub parse_full: bool,
    /// The robots.txt gate or DNS holds requests back.
    pub admission_waiting: bool,
    /// The downloader's counters (errors by kind, statuses).
    pub downloads: &'a crate::stats::Stats,
    /// The middlewares' counters (retries, Retry-After).
    pub middlewares: &'a crate::stats::Stats,
}

/// One slot's figures at one snapshot.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SlotPoint {
    pub slot: SlotId,
    pub active: usize,
    pub delay_ms: f64,
    pub limit: usize,
}

/// One snapshot of the crawl.
#[derive(Debug, Clone)]
pub(crate) struct Sample {
    /// Seconds since the crawl started.
    pub t: f64,
    pub pages: u64,
    pub in_flight: usize,
    pub queued: usize,
    /// Latency percentiles (p50, p90, p99) of the responses since the previous sample, in ms.
    pub latency: Option<[f64; 3]>,
    /// Cumulative errors by kind (exception kinds and non-2xx statuses).
    pub errors: BTreeMap<String, u64>,
    pub retries: u64,
    pub retry_after: u64,
    pub slots: Vec<SlotPoint>,
}

/// What one slot saw over the whole crawl.
#[derive(Debug, Clone, Default)]
pub(crate) struct SlotTrack {
    pub key: String,
    pub responses: u64,
    pub overloads: u64,
    pub max_active: usize,
    pub last: Option<SlotPace>,
    /// Headers latency in ms, a bounded reservoir.
    latencies: Vec<f32>,
    seen: u64,
    /// Latency sum and count by requests in flight when the response came (index = in flight).
    pub by_in_flight: Vec<(f64, u64)>,
    /// Snapshots spent held back by each limit.
    pub limits: BTreeMap<Limit, u64>,
    pub max_delay_ms: f64,
    pub min_limit: Option<usize>,
}

impl SlotTrack {
    fn latency_percentiles(&self) -> Option<[f64; 3]> {
        percentiles(self.latencies.iter().map(|&v| v as f64).collect())
    }

    /// The mean latency (ms) with `n` requests in flight, if any response saw that.
    pub fn latency_at(&self, n: usize) -> Option<f64> {
        self.by_in_flight
            .get(n)
            .filter(|(_, c)| *c > 0)
            .map(|(s, c)| s / *c as f64)
    }
}

/// The settings the verdicts talk about.
#[derive(Debug, Clone)]
pub(crate) struct Knobs {
    pub concurrent_requests: usize,
    pub per_slot: usize,
    pub per_ip: bool,
    pub download_delay: Duration,
    pub autothrottle: Option<crate::settings::ThrottleMode>,
    pub target_concurrency: f64,
}

/// Records the crawl for the report and writes it.
pub(crate) struct Recorder {
    path: PathBuf,
    started: Instant,
    started_wall: std::time::SystemTime,
    period: Duration,
    next_sample: Instant,
    last_write: Instant,
    samples: Vec<Sample>,
    slots: Vec<SlotTrack>,
    window: Vec<f64>,
    crawl_limits: BTreeMap<Limit, u64>,
    knobs: Knobs,
    finished: Option<String>,
    rng: u64,
}

impl Recorder {
    pub(crate) fn new(path: PathBuf, knobs: Knobs) -> Self {
        let now = Instant::now();
        Recorder {
            path,
            started: now,
            started_wall: std::time::SystemTime::now(),
            period: SAMPLE_EVERY,
            next_sample: now,
            last_write: now,
            samples: Vec::new(),
            slots: Vec::new(),
            window: Vec::new(),
            crawl_limits: BTreeMap::new(),
            knobs,
            finished: None,
            rng: 0x9E37_79B9_7F4A_7C15,
        }
    }

    /// When the next snapshot is due.
    pub(crate) fn next_sample(&self) -> Instant {
        self.next_sample
    }

    fn track(&mut self, slot: SlotId, key: &str) -> &mut SlotTrack {
        if self.slots.len() <= slot {
            self.slots.resize_with(slot + 1, SlotTrack::default);
        }
        let t = &mut self.slots[slot];
        if t.key.is_empty() {
            t.key = key.to_string();
        }
        t
    }

    /// A response of `slot` came `latency` after its request was sent, with
    /// `in_flight` requests of the slot on the wire (this one included).
    pub(crate) fn response(
        &mut self,
        slot: SlotId,
        key: &str,
        status: u16,
        latency: Duration,
        in_flight: usize,
    ) {
        let ms = latency.as_secs_f64() * 1e3;
        self.window.push(ms);
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let r = self.rng;
        let t = self.track(slot, key);
        t.responses += 1;
        if crate::throttle::is_overload(status) {
            t.overloads += 1;
        }
        t.seen += 1;
        if t.latencies.len() < LATENCIES_PER_SLOT {
            t.latencies.push(ms as f32);
        } else {
            let i = (r % t.seen) as usize;
            if i < LATENCIES_PER_SLOT {
                t.latencies[i] = ms as f32;
            }
        }
        let n = in_flight.min(256);
        if t.by_in_flight.len() <= n {
            t.by_in_flight.resize(n + 1, (0.0, 0));
        }
        t.by_in_flight[n].0 += ms;
        t.by_in_flight[n].1 += 1;
    }

    /// Takes a snapshot; writes the file when it is due. `slots` lists every slot.
    pub(crate) fn sample<'k>(
        &mut self,
        now: Instant,
        crawl: CrawlState<'_>,
        slots: impl Iterator<Item = (SlotId, &'k str, SlotPace)>,
    ) {
        self.next_sample = now + self.period;
        let mut points = Vec::new();
        let mut any_ready = false;
        let mut held = BTreeMap::<Limit, u64>::new();
        for (id, key, pace) in slots {
            if pace.active == 0 && pace.queued == 0 {
                if let Some(t) = self.slots.get_mut(id) {
                    t.last = Some(pace);
                }
                continue;
            }
            let limit = verdict::slot_limit(&pace, &crawl, self.knobs.autothrottle);
            any_ready |= limit == Limit::GlobalCap || limit == Limit::Parsing;
            let t = self.track(id, key);
            t.last = Some(pace);
            t.max_active = t.max_active.max(pace.active);
            let delay_ms = pace.delay.as_secs_f64() * 1e3;
            t.max_delay_ms = t.max_delay_ms.max(delay_ms);
            t.min_limit = Some(t.min_limit.map_or(pace.limit, |m| m.min(pace.limit)));
            *t.limits.entry(limit).or_default() += 1;
            if pace.queued > 0 {
                *held.entry(limit).or_default() += pace.queued as u64;
            }
            points.push(SlotPoint {
                slot: id,
                active: pace.active,
                delay_ms,
                limit: pace.limit,
            });
        }
        let crawl_limit = verdict::crawl_limit(&crawl, any_ready, &held);
        *self.crawl_limits.entry(crawl_limit).or_default() += 1;
        points.sort_by_key(|p| std::cmp::Reverse(p.active));
        points.truncate(SLOTS_PER_SAMPLE);
        let mut errors = BTreeMap::new();
        for (key, n) in crawl.downloads.counters() {
            if let Some(kind) = key.strip_prefix("downloader/exception_type_count/") {
                errors.insert(kind.to_string(), *n);
            } else if let Some(status) = key.strip_prefix("downloader/response_status_count/") {
                if !status.starts_with('2') && !status.starts_with('3') {
                    errors.insert(format!("HTTP {status}"), *n);
                }
            }
        }
        let latency = percentiles(std::mem::take(&mut self.window));
        self.samples.push(Sample {
            t: now.duration_since(self.started).as_secs_f64(),
            pages: crawl.pages,
            in_flight: crawl.in_flight,
            queued: crawl.queued,
            latency,
            errors,
            retries: crawl.middlewares.get("retry/count"),
            retry_after: crawl.middlewares.get("retry/retry_after_count"),
            slots: points,
        });
        if self.samples.len() > MAX_SAMPLES {
            // Keep every other snapshot (the first and the latest stay).
            let mut i = 0;
            self.samples.retain(|_| {
                i += 1;
                i % 2 == 1
            });
            self.period *= 2;
        }
        if now.duration_since(self.last_write) >= WRITE_EVERY {
            self.last_write = now;
            self.write();
        }
    }

    /// The crawl ended for `reason`: writes the final report.
    pub(crate) fn finish(&mut self, reason: &str) -> std::io::Result<()> {
        self.finished = Some(reason.to_string());
        self.try_write()
    }

    fn write(&self) {
        if let Err(error) = self.try_write() {
            tracing::warn!(path = %self.path.display(), %error, "cannot write the report");
        }
    }

    fn try_write(&self) -> std::io::Result<()> {
        let html = html::render(self);
        // Written beside and renamed, so a reader never sees half a file.
        let tmp = self.path.with_extension("html.tmp");
        std::fs::write(&tmp, html)?;
        std::fs::rename(&tmp, &self.path)
    }
}

/// p50, p90 and p99 of some values; none for no values.
fn percentiles(mut v: Vec<f64>) -> Option<[f64; 3]> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    Some([at(0.5), at(0.9), at(0.99)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_hundred() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentiles(v), Some([51.0, 90.0, 99.0]));
        assert_eq!(percentiles(Vec::new()), None);
    }
}
