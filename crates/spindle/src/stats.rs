//! Crawl statistics under Scrapy's names, plus the per-slot figures Scrapy lacks.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

pub use crate::downloader::slot::SlotStats;

/// Counters the engine keeps while it runs. Owned by the engine's event loop, so no locks.
#[derive(Debug, Default)]
pub struct Stats {
    counters: BTreeMap<String, u64>,
}

impl Stats {
    pub fn inc(&mut self, key: &str) {
        self.inc_by(key, 1);
    }

    pub fn inc_by(&mut self, key: &str, n: u64) {
        match self.counters.get_mut(key) {
            Some(v) => *v += n,
            None => {
                self.counters.insert(key.to_string(), n);
            }
        }
    }

    pub fn max(&mut self, key: &str, n: u64) {
        let v = self.counters.entry(key.to_string()).or_insert(n);
        *v = (*v).max(n);
    }

    /// Adds another part's counters to these.
    pub fn merge(&mut self, other: &Stats) {
        for (key, n) in &other.counters {
            self.inc_by(key, *n);
        }
    }

    pub fn get(&self, key: &str) -> u64 {
        self.counters.get(key).copied().unwrap_or(0)
    }

    pub fn counters(&self) -> &BTreeMap<String, u64> {
        &self.counters
    }

    /// Takes `other`'s counters away from these (never below zero).
    pub fn subtract(&mut self, other: &Stats) {
        for (key, n) in &other.counters {
            if let Some(v) = self.counters.get_mut(key) {
                *v = v.saturating_sub(*n);
            }
        }
    }

    /// Adds the counters of a job's earlier runs: sums, except maxima, which
    /// stay maxima. Counters of one run only ([`is_per_run`]) are left out.
    pub fn add_job(&mut self, earlier: &Stats) {
        for (key, n) in &earlier.counters {
            if is_per_run(key) {
                continue;
            }
            if key.ends_with("_max") || key.ends_with("/max") {
                self.max(key, *n);
            } else {
                self.inc_by(key, *n);
            }
        }
    }

    /// The counters as a JSON object, as a job's store keeps them.
    pub fn to_json(&self) -> String {
        serde_json::to_string(&self.counters).expect("a map of numbers serializes")
    }

    /// Counters from [`Stats::to_json`].
    pub fn from_json(json: &str) -> Result<Stats, serde_json::Error> {
        Ok(Stats {
            counters: serde_json::from_str(json)?,
        })
    }
}

/// Whether a counter describes one run (the process) rather than the job:
/// a resumed job starts these from zero. The process's memory is one run's.
/// (The report's times, `finish_reason` and the per-slot table are per run
/// too, but they are not counters.)
pub fn is_per_run(key: &str) -> bool {
    key.starts_with("memusage/")
}

/// Live figures for a progress display, updated by the engine and readable from any thread.
#[derive(Debug, Default)]
pub struct Progress {
    /// Responses received.
    pub pages: AtomicU64,
    /// Items that passed the pipelines.
    pub items: AtomicU64,
    /// Requests sent.
    pub requests: AtomicU64,
    /// Requests on the wire now.
    pub in_flight: AtomicU64,
    /// Requests waiting in the frontier.
    pub queued: AtomicU64,
    /// Downloads that failed.
    pub failed: AtomicU64,
}

impl Progress {
    /// Reads one of the counters above.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    pub(crate) fn set(counter: &AtomicU64, value: u64) {
        counter.store(value, Ordering::Relaxed);
    }
}

/// Sums over a set of slots.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct SlotTotals {
    /// How many slots.
    pub slots: u64,
    /// Requests they started.
    pub requests: u64,
    /// Downloads of theirs that failed.
    pub errors: u64,
    /// Seconds their requests waited in their queues.
    pub wait_seconds: f64,
}

impl SlotTotals {
    fn add(&mut self, s: &SlotStats) {
        self.slots += 1;
        self.requests += s.requests;
        self.errors += s.errors;
        self.wait_seconds += s.wait_seconds;
    }
}

/// Per-slot figures kept in bounded memory: totals over every slot, and
/// the top slots by requests, by errors and by wait (or every slot, when
/// asked with `STATS_SLOTS_ALL`).
#[derive(Debug, Default)]
pub struct SlotTable {
    totals: SlotTotals,
    rankings: [Vec<(String, SlotStats)>; 3],
}

impl SlotTable {
    /// Adds one slot's figures, keeping it if it is among the `top` of a ranking
    /// (`usize::MAX` keeps every slot).
    pub fn add(&mut self, key: &str, stats: &SlotStats, top: usize) {
        self.totals.add(stats);
        if top == usize::MAX {
            self.rankings[0].push((key.to_string(), stats.clone()));
            return;
        }
        let score = |s: &SlotStats, i: usize| match i {
            0 => s.requests as f64,
            1 => s.errors as f64,
            _ => s.wait_seconds,
        };
        for (i, ranking) in self.rankings.iter_mut().enumerate() {
            let mine = score(stats, i);
            if mine <= 0.0 || top == 0 {
                continue;
            }
            if ranking.len() < top {
                ranking.push((key.to_string(), stats.clone()));
                continue;
            }
            let (min_at, min) = ranking
                .iter()
                .enumerate()
                .map(|(at, (_, s))| (at, score(s, i)))
                .fold((0, f64::MAX), |a, b| if b.1 < a.1 { b } else { a });
            if mine > min {
                ranking[min_at] = (key.to_string(), stats.clone());
            }
        }
    }

    /// The slots kept, by key, and the totals of all the others.
    pub fn finish(self) -> (BTreeMap<String, SlotStats>, SlotTotals) {
        let mut kept = BTreeMap::new();
        for (key, stats) in self.rankings.into_iter().flatten() {
            kept.insert(key, stats);
        }
        let mut rest = self.totals;
        for s in kept.values() {
            rest.slots -= 1;
            rest.requests -= s.requests;
            rest.errors -= s.errors;
            rest.wait_seconds = (rest.wait_seconds - s.wait_seconds).max(0.0);
        }
        (kept, rest)
    }
}

/// One worker process of a multi-process crawl, from its shared-memory counters.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct WorkerReport {
    /// The worker's process id.
    pub pid: u32,
    /// Requests it sent.
    pub requests: u64,
    /// Responses it received.
    pub responses: u64,
    /// Body bytes it received.
    pub bytes: u64,
    /// Items it scraped.
    pub items: u64,
    /// Python's meaning: 0, the code it exited with, or minus the signal that killed it.
    pub exit_code: Option<i32>,
}

/// The final report of a crawl.
#[derive(Debug, Clone, Serialize)]
pub struct CrawlReport {
    /// Scrapy's counters (`downloader/request_count`, `item_scraped_count`, …).
    #[serde(flatten)]
    pub counters: BTreeMap<String, u64>,
    /// When the crawl started, in seconds since the Unix epoch.
    pub start_time: f64,
    /// When it finished, in seconds since the Unix epoch.
    pub finish_time: f64,
    /// How long it ran.
    pub elapsed_time_seconds: f64,
    /// Why it stopped: `finished`, `shutdown`, `closespider_timeout`, …
    pub finish_reason: String,
    /// Per download slot: requests, the most in flight at once, the shortest
    /// start-to-start gap, the shortest send-to-send gap, errors and queue wait. The top
    /// slots by requests, by errors and by wait (`STATS_SLOTS_TOP`), or all of them
    /// (`STATS_SLOTS_ALL`).
    pub slots: BTreeMap<String, SlotStats>,
    /// Totals over the slots not listed in `slots`.
    #[serde(skip_serializing_if = "is_no_slots")]
    pub other_slots: SlotTotals,
    /// Multi-process mode: every worker process that ran, with its pid.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub workers: Vec<WorkerReport>,
    /// Why the output or the job's store could not be written, when it could
    /// not: the crawl stopped there (`finish_reason` `export_error`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_error: Option<String>,
}

impl CrawlReport {
    pub(crate) fn new(
        stats: &Stats,
        started: SystemTime,
        elapsed: Duration,
        finish_reason: &str,
        slots: BTreeMap<String, SlotStats>,
    ) -> Self {
        let unix = |t: SystemTime| {
            t.duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs_f64()
        };
        CrawlReport {
            counters: stats.counters().clone(),
            start_time: unix(started),
            finish_time: unix(started + elapsed),
            elapsed_time_seconds: elapsed.as_secs_f64(),
            finish_reason: finish_reason.to_string(),
            slots,
            other_slots: SlotTotals::default(),
            workers: Vec::new(),
            output_error: None,
        }
    }

    /// A counter's value (0 when it was never counted).
    pub fn get(&self, key: &str) -> u64 {
        self.counters.get(key).copied().unwrap_or(0)
    }

    /// The report as pretty-printed JSON, as `--stats FILE` writes it.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("stats serialize")
    }

    /// A human-readable dump, one stat a line, as Scrapy prints at the end of a crawl.
    pub fn summary(&self) -> String {
        let mut out = String::from("Dumping spindle stats:\n");
        for (k, v) in &self.counters {
            out.push_str(&format!("  {k}: {v}\n"));
        }
        out.push_str(&format!(
            "  elapsed_time_seconds: {:.3}\n  finish_reason: {}\n",
            self.elapsed_time_seconds, self.finish_reason
        ));
        if !self.workers.is_empty() {
            out.push_str("Workers (pid: requests, responses, items, exit):\n");
            for w in &self.workers {
                let exit = w.exit_code.map_or("-".to_string(), |c| c.to_string());
                out.push_str(&format!(
                    "  {}: {} requests, {} responses, {} items, exit {exit}\n",
                    w.pid, w.requests, w.responses, w.items
                ));
            }
        }
        if !self.slots.is_empty() {
            out.push_str(
                "Slots (requests, max in flight, min start gap, min send gap, errors, queue wait):\n",
            );
            let secs = |g: Option<f64>| g.map_or_else(|| "-".to_string(), |g| format!("{g:.3}s"));
            for (key, s) in &self.slots {
                out.push_str(&format!(
                    "  {key}: {} requests, max {} in flight, min gap {}, min send gap {}, {} errors, waited {:.1}s\n",
                    s.requests,
                    s.max_in_flight,
                    secs(s.min_start_gap_seconds),
                    secs(s.min_send_gap_seconds.seconds()),
                    s.errors,
                    s.wait_seconds
                ));
            }
        }
        let o = &self.other_slots;
        if o.slots > 0 {
            out.push_str(&format!(
                "  {} other slots: {} requests, {} errors, waited {:.1}s (all slots: STATS_SLOTS_ALL=true)\n",
                o.slots, o.requests, o.errors, o.wait_seconds
            ));
        }
        out
    }
}

fn is_no_slots(t: &SlotTotals) -> bool {
    t.slots == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_adds_sums_keeps_maxima_and_leaves_out_one_runs_counters() {
        let mut earlier = Stats::default();
        earlier.inc_by("item_scraped_count", 10);
        earlier.max("request_depth_max", 7);
        earlier.max("memusage/max", 1 << 30);
        let earlier = Stats::from_json(&earlier.to_json()).unwrap();
        let mut now = Stats::default();
        now.inc_by("item_scraped_count", 5);
        now.max("request_depth_max", 3);
        now.max("memusage/max", 1 << 20);
        now.add_job(&earlier);
        assert_eq!(now.get("item_scraped_count"), 15);
        assert_eq!(now.get("request_depth_max"), 7);
        assert_eq!(now.get("memusage/max"), 1 << 20, "this run's memory only");
        let mut open = Stats::default();
        open.inc_by("item_scraped_count", 20);
        now.subtract(&open);
        assert_eq!(now.get("item_scraped_count"), 0, "never below zero");
    }

    fn slot(requests: u64, errors: u64, wait: f64) -> SlotStats {
        SlotStats {
            requests,
            errors,
            wait_seconds: wait,
            ..SlotStats::default()
        }
    }

    #[test]
    fn the_table_keeps_the_top_slots_and_totals_the_rest() {
        let mut t = SlotTable::default();
        for i in 0..1000u64 {
            t.add(&format!("s{i}"), &slot(i, 0, 0.0), 3);
        }
        t.add("failing", &slot(1, 50, 0.0), 3);
        t.add("waiting", &slot(1, 0, 99.0), 3);
        let (kept, rest) = t.finish();
        let keys: Vec<&str> = kept.keys().map(String::as_str).collect();
        assert_eq!(keys, ["failing", "s997", "s998", "s999", "waiting"]);
        assert_eq!(rest.slots, 1002 - 5);
        assert_eq!(rest.requests, (0..997).sum::<u64>());
        assert_eq!(rest.errors, 0);
    }

    #[test]
    fn the_whole_table_on_request() {
        let mut t = SlotTable::default();
        for i in 0..100u64 {
            t.add(&format!("s{i}"), &slot(i, 0, 0.0), usize::MAX);
        }
        let (kept, rest) = t.finish();
        assert_eq!(kept.len(), 100);
        assert_eq!(rest.slots, 0);
    }
}
