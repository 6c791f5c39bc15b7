//! The scheduler: the frontier of requests waiting to be downloaded, one
//! priority queue per download slot, and the duplicate filter.
//!
//! It decides what starts next, so it owns the slots' politeness state: a
//! request leaves the scheduler only when its slot has room under its
//! concurrency cap and its download delay has passed. Among the slots that
//! may start, it picks the one with the fewest requests on the wire, ties
//! going to the slot picked least recently — Scrapy's
//! `DownloaderAwarePriorityQueue`, without its head-of-line blocking (#2638):
//! a slow or delayed slot is simply not eligible, so it never holds a place
//! that another slot could use. Priority orders requests within a slot only.
//!
//! All of this state belongs to the engine's single event-loop task, so no
//! lock is taken per request.

pub mod disk;
pub mod dupefilter;
pub mod fpset;
pub mod store;
pub mod window;

use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeSet, BinaryHeap, HashMap};
use std::time::Instant;

use rand::rngs::SmallRng;
use rand::SeedableRng;

use crate::downloader::slot::{Pacing, SendGate, Slot, SlotPolicy, SlotStats};
use crate::request::Request;
use crate::settings::Settings;
use crate::stats::Stats;
pub use dupefilter::{canonicalize_url, fingerprint, DupeFilter};

/// Index of a slot inside the scheduler.
pub type SlotId = usize;

/// A request leaving the scheduler to be downloaded.
pub struct Dispatch {
    pub slot: SlotId,
    pub request: Request,
    /// Passed just before sending, so the wire sees the slot's spacing.
    pub pacing: Pacing,
}

/// Which policy each new slot gets.
#[derive(Debug, Clone)]
pub struct SlotPolicies {
    default: SlotPolicy,
    overrides: HashMap<String, SlotPolicy>,
    /// AutoThrottle's start: each new slot's delay (at least its own), and
    /// its concurrency in adaptive mode.
    start_delay: Option<std::time::Duration>,
    start_limit: Option<usize>,
}

/// A slot's pace as AutoThrottle sees and sets it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SlotPace {
    /// The delay in force.
    pub delay: std::time::Duration,
    /// The smallest delay allowed (`DOWNLOAD_DELAY`, or a larger `Crawl-delay`).
    pub min_delay: std::time::Duration,
    /// Requests allowed on the wire at once now.
    pub limit: usize,
    /// The slot's cap (`CONCURRENT_REQUESTS_PER_DOMAIN`/`_PER_IP`, `DOWNLOAD_SLOTS`).
    pub cap: usize,
    /// Requests on the wire now.
    pub active: usize,
    /// Requests waiting in the slot's queue.
    pub queued: usize,
    /// Whether the slot waits for its delay or a pause at `now`.
    pub delayed: bool,
    /// Whether a backoff or `Retry-After` pause holds it at `now`.
    pub paused: bool,
    /// Whether a robots.txt `Crawl-delay` sets its minimum delay.
    pub crawl_delay: bool,
}

impl SlotPolicies {
    pub fn from_settings(settings: &Settings) -> Self {
        let default = SlotPolicy {
            concurrency: settings.default_slot_concurrency(),
            delay: settings.download_delay,
            randomize_delay: settings.randomize_download_delay,
        };
        let overrides = settings
            .download_slots
            .iter()
            .map(|(key, o)| {
                let policy = SlotPolicy {
                    concurrency: o.concurrency.unwrap_or(default.concurrency),
                    delay: o
                        .delay
                        .map(std::time::Duration::from_secs_f64)
                        .unwrap_or(default.delay),
                    randomize_delay: o.randomize_delay.unwrap_or(default.randomize_delay),
                };
                (key.clone(), policy)
            })
            .collect();
        let throttle = settings.autothrottle_enabled;
        let mode = settings.autothrottle_mode;
        SlotPolicies {
            default,
            overrides,
            start_delay: (throttle && mode == crate::settings::ThrottleMode::Delay)
                .then_some(settings.autothrottle_start_delay),
            start_limit: (throttle && mode == crate::settings::ThrottleMode::Adaptive).then_some(1),
        }
    }

    fn new_slot(&self, key: &str, gate: SendGate) -> Slot {
        let mut slot = Slot::new(self.for_key(key), gate);
        if let Some(d) = self.start_delay {
            slot.set_delay(d);
        }
        if let Some(n) = self.start_limit {
            slot.set_limit(n);
        }
        slot
    }

    pub fn for_key(&self, key: &str) -> SlotPolicy {
        self.overrides.get(key).copied().unwrap_or(self.default)
    }
}

struct Queued {
    priority: i32,
    seq: u64,
    request: Request,
}

impl Ord for Queued {
    /// Higher priority first; first in, first out within a priority, so the
    /// crawl goes breadth-first and depths are shortest distances.
    fn cmp(&self, other: &Self) -> Ordering {
        self.priority
            .cmp(&other.priority)
            .then_with(|| other.seq.cmp(&self.seq))
    }
}
impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl PartialEq for Queued {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Queued {}

struct SlotEntry {
    key: String,
    slot: Slot,
    queue: BinaryHeap<Queued>,
    last_pick: u64,
    /// The entry this slot has in `ready`, if it is there.
    ready_key: Option<(usize, u64)>,
    /// The wake-up time this slot has in `timers`, if any (older heap entries are stale).
    timer: Option<Instant>,
}

/// The frontier, the slots and the duplicate filter.
pub struct Scheduler {
    policies: SlotPolicies,
    slots: Vec<SlotEntry>,
    by_key: HashMap<String, SlotId>,
    /// Slots that may start a request now: (active, last pick, id).
    ready: BTreeSet<(usize, u64, SlotId)>,
    /// Slots with work and room that wait for their delay.
    timers: BinaryHeap<Reverse<(Instant, SlotId)>>,
    dupefilter: DupeFilter,
    queued: usize,
    seq: u64,
    picks: u64,
    rng: SmallRng,
    /// With a job (JOBDIR): where admissions and completions are recorded.
    job: Option<JobLog>,
    /// With a job: the part of the frontier left on disk.
    window: Option<window::Window>,
    /// `scheduler/enqueued`, `scheduler/dequeued`, `dupefilter/filtered`.
    pub stats: Stats,
    /// Makes each new slot's send gate: its own, or cells in memory shared
    /// with worker processes (multi-process mode).
    gates: Option<Box<dyn Fn(SlotId) -> SendGate + Send>>,
}

/// A request as a job knows it: (queue, number).
pub type JobRef = (String, u64);

/// What the scheduler tells a job's store, in the order it happens.
#[derive(Debug)]
pub enum JobOp {
    /// A request was admitted (its fingerprint, when it has one, is now seen).
    Push(store::Pending, Option<u64>),
    /// A request is done: (queue, id, whether it was a page the spider parsed).
    Done(String, u64, bool),
    /// State to keep for a slot or an origin, replacing what was kept under that key.
    SlotState(String, Vec<u8>),
}

/// The slot-state key of a slot's pause (backoff, `Retry-After`).
pub const PAUSE_STATE: &str = "pause ";

/// The scheduler's end of a job: request numbers and the way to the store.
pub struct JobLog {
    next_id: u64,
    sink: Box<dyn FnMut(JobOp) + Send>,
}

impl JobLog {
    /// Numbers requests from `next_id` on and hands every operation to `sink`.
    pub fn new(next_id: u64, sink: Box<dyn FnMut(JobOp) + Send>) -> Self {
        JobLog {
            next_id: next_id.max(1),
            sink,
        }
    }
}

impl Scheduler {
    pub fn new(policies: SlotPolicies) -> Self {
        Scheduler {
            policies,
            slots: Vec::new(),
            by_key: HashMap::new(),
            ready: BTreeSet::new(),
            timers: BinaryHeap::new(),
            dupefilter: DupeFilter::default(),
            queued: 0,
            seq: 0,
            picks: 0,
            rng: SmallRng::from_entropy(),
            job: None,
            window: None,
            stats: Stats::default(),
            gates: None,
        }
    }

    /// Gives every slot made from now on the gate `gates` makes for its id
    /// (multi-process mode: cells the worker processes pass themselves).
    pub fn with_gates(mut self, gates: impl Fn(SlotId) -> SendGate + Send + 'static) -> Self {
        self.gates = Some(Box::new(gates));
        self
    }

    /// Records every admission and completion in a job from now on.
    pub fn set_job(&mut self, job: JobLog) {
        self.job = Some(job);
    }

    /// Keeps only a window of each slot's requests in memory from now on.
    pub fn set_window(&mut self, window: window::Window) {
        self.window = Some(window);
    }

    /// Marks a fingerprint seen, as a resumed job's seen set says.
    pub fn restore_seen(&mut self, fp: u64) {
        self.dupefilter.insert_fingerprint(fp);
    }

    /// Records the request's fingerprint (method, canonical URL, body) as
    /// seen; false when it is a duplicate to drop. With a job, a page
    /// request gets its number and is recorded as pending.
    pub fn admit(&mut self, request: &mut Request) -> bool {
        let fp = (!request.dont_filter).then(|| request.fingerprint());
        let new = fp.is_none_or(|fp| self.dupefilter.insert_fingerprint(fp));
        if !new {
            self.stats.inc("dupefilter/filtered");
            return false;
        }
        if let Some(job) = &mut self.job {
            // robots.txt is fetched again on resume, so it is never stored.
            if !request.is_robots() {
                request.job = job.next_id;
                job.next_id += 1;
                match postcard::to_allocvec(&*request) {
                    Ok(bytes) => {
                        let pending = store::Pending {
                            id: request.job,
                            queue: request.queue_key(),
                            request: bytes,
                        };
                        (job.sink)(JobOp::Push(pending, fp));
                    }
                    Err(error) => {
                        // Kept in memory only, as Scrapy does with what it cannot pickle.
                        tracing::warn!(url = %request.url, %error, "request cannot be stored; it will not survive a restart");
                        self.stats.inc("scheduler/unserializable");
                        request.job = 0;
                    }
                }
            }
        }
        true
    }

    /// A request is done: its page was parsed, or it failed, was dropped or
    /// redirected for good. `page` says whether the spider parsed it.
    /// Nothing happens without a job, or for a request the job does not hold.
    pub fn done(&mut self, request: &Request, page: bool) {
        if request.job != 0 {
            self.done_id(request.queue_key(), request.job, page);
        }
    }

    /// [`Scheduler::done`] by queue and number.
    pub fn done_id(&mut self, queue: String, id: u64, page: bool) {
        if let Some(job) = &mut self.job {
            (job.sink)(JobOp::Done(queue, id, page));
        }
    }

    /// Queues an admitted request in the named slot, creating the slot if needed.
    pub fn push(&mut self, slot_key: &str, request: Request, now: Instant) {
        let id = self.slot_id(slot_key);
        self.stats.inc("scheduler/enqueued");
        if let Some(window) = &mut self.window {
            // A per-IP slot gathers several hosts' queues: those stay whole in memory.
            if request.job != 0 && request.queue_key() == slot_key {
                let in_memory = self.slots[id].queue.len();
                if window.spill(slot_key, request.job, in_memory) {
                    self.stats.inc("scheduler/enqueued/disk");
                    return;
                }
            }
        }
        self.seq += 1;
        self.slots[id].queue.push(Queued {
            priority: request.priority,
            seq: self.seq,
            request,
        });
        self.queued += 1;
        self.refresh(id, now);
    }

    /// The next request allowed to start now, which its slot counts as started.
    pub fn pop(&mut self, now: Instant) -> Option<Dispatch> {
        self.wake_due(now);
        if let Some(window) = &mut self.window {
            for key in window.due(now) {
                // Outside per-IP mode a queue is its slot, so its slot may be made here.
                let id = self.slot_id(&key);
                self.top_up(id, now);
            }
        }
        let &(_, _, id) = self.ready.first()?;
        self.picks += 1;
        let entry = &mut self.slots[id];
        let queued = entry.queue.pop().expect("a ready slot has queued requests");
        entry.last_pick = self.picks;
        let pacing = entry.slot.start(now, &mut self.rng);
        self.queued -= 1;
        self.stats.inc("scheduler/dequeued");
        if self.slots[id].queue.len() < window::WINDOW / 2 {
            self.top_up(id, now);
        }
        self.refresh(id, now);
        Some(Dispatch {
            slot: id,
            request: queued.request,
            pacing,
        })
    }

    /// A request of this slot has left the wire.
    pub fn finish(&mut self, id: SlotId, now: Instant) {
        self.slots[id].slot.finish();
        self.refresh(id, now);
    }

    /// The slot for a key, created with its policy if it is new.
    pub fn slot(&mut self, key: &str) -> SlotId {
        self.slot_id(key)
    }

    /// Applies a robots.txt `Crawl-delay` to a slot.
    pub fn set_delay_floor(&mut self, id: SlotId, floor: std::time::Duration, now: Instant) {
        self.slots[id].slot.set_delay_floor(floor);
        self.refresh(id, now);
    }

    /// A slot's pace: delay, limit, cap, requests on the wire and queued.
    pub fn pace(&self, id: SlotId, now: Instant) -> SlotPace {
        let entry = &self.slots[id];
        let slot = &entry.slot;
        SlotPace {
            delay: slot.delay(),
            min_delay: slot.min_delay(),
            limit: slot.limit(),
            cap: slot.policy.concurrency,
            active: slot.active(),
            queued: entry.queue.len(),
            delayed: slot.delayed_until(now).is_some(),
            paused: slot.is_paused(now),
            crawl_delay: slot.crawl_delay_binds(),
        }
    }

    /// Every slot's id and key.
    pub fn slot_ids(&self) -> impl Iterator<Item = (SlotId, &str)> {
        self.slots
            .iter()
            .enumerate()
            .map(|(id, e)| (id, e.key.as_str()))
    }

    /// Sets a slot's delay (AutoThrottle); never below its minimum.
    pub fn set_delay(&mut self, id: SlotId, delay: std::time::Duration, now: Instant) {
        self.slots[id].slot.set_delay(delay);
        self.refresh(id, now);
    }

    /// Sets a slot's concurrency (adaptive mode); within 1 and its cap.
    pub fn set_limit(&mut self, id: SlotId, limit: usize, now: Instant) {
        self.slots[id].slot.set_limit(limit);
        self.refresh(id, now);
    }

    /// Starts nothing in this slot before `until`; other slots go on.
    pub fn pause(&mut self, id: SlotId, until: Instant, now: Instant) {
        self.slots[id].slot.pause(until);
        self.refresh(id, now);
        if self.job.is_some() {
            // Kept as wall-clock time, so a resumed job still honours it.
            let wall = std::time::SystemTime::now() + until.saturating_duration_since(now);
            let unix = wall
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            let key = format!("{PAUSE_STATE}{}", self.slots[id].key);
            self.keep_state(key, unix.to_be_bytes().to_vec());
        }
    }

    /// Keeps state under `key` in the job's store (without a job, nothing happens).
    pub fn keep_state(&mut self, key: String, state: Vec<u8>) {
        if let Some(job) = &mut self.job {
            (job.sink)(JobOp::SlotState(key, state));
        }
    }

    /// The earliest time a delayed slot may start its next request (or, with
    /// a job, a window waiting for its requests to be committed is looked at again).
    pub fn next_wakeup(&self) -> Option<Instant> {
        let timer = self.timers.peek().map(|Reverse((t, _))| *t);
        let retry = self.window.as_ref().and_then(|w| w.next_retry());
        match (timer, retry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Requests waiting in the frontier, in memory or (with a job) on disk.
    pub fn len(&self) -> usize {
        self.queued + self.window.as_ref().map_or(0, |w| w.spilled())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Brings a slot's window back up from disk (with a job).
    fn top_up(&mut self, id: SlotId, now: Instant) {
        let Some(window) = &mut self.window else {
            return;
        };
        let entry = &mut self.slots[id];
        if !window.has_spilled(&entry.key) {
            return;
        }
        let room = window::WINDOW.saturating_sub(entry.queue.len());
        for request in window.refill(&entry.key, room) {
            self.seq += 1;
            entry.queue.push(Queued {
                priority: request.priority,
                seq: self.seq,
                request,
            });
            self.queued += 1;
        }
        self.refresh(id, now);
    }

    pub fn slot_key(&self, id: SlotId) -> &str {
        &self.slots[id].key
    }

    /// Every slot's figures, by slot key.
    pub fn slot_stats(&self) -> impl Iterator<Item = (&str, &SlotStats)> {
        self.slots.iter().map(|e| (e.key.as_str(), &e.slot.stats))
    }

    fn slot_id(&mut self, key: &str) -> SlotId {
        if let Some(&id) = self.by_key.get(key) {
            return id;
        }
        let id = self.slots.len();
        self.slots.push(SlotEntry {
            key: key.to_string(),
            slot: self.policies.new_slot(
                key,
                self.gates
                    .as_ref()
                    .map_or_else(SendGate::default, |make| make(id)),
            ),
            queue: BinaryHeap::new(),
            last_pick: 0,
            ready_key: None,
            timer: None,
        });
        self.by_key.insert(key.to_string(), id);
        id
    }

    fn wake_due(&mut self, now: Instant) {
        while let Some(&Reverse((t, id))) = self.timers.peek() {
            if t > now {
                break;
            }
            self.timers.pop();
            if self.slots[id].timer == Some(t) {
                self.slots[id].timer = None;
                self.refresh(id, now);
            }
        }
    }

    /// Puts the slot where its state says it belongs: ready, waiting on a timer, or neither.
    fn refresh(&mut self, id: SlotId, now: Instant) {
        let entry = &mut self.slots[id];
        if let Some((active, pick)) = entry.ready_key.take() {
            self.ready.remove(&(active, pick, id));
        }
        if entry.queue.is_empty() || !entry.slot.has_capacity() {
            return;
        }
        match entry.slot.delayed_until(now) {
            None => {
                let key = (entry.slot.active(), entry.last_pick);
                self.ready.insert((key.0, key.1, id));
                entry.ready_key = Some(key);
            }
            Some(t) => {
                if entry.timer != Some(t) {
                    entry.timer = Some(t);
                    self.timers.push(Reverse((t, id)));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn policies(concurrency: usize, delay_ms: u64) -> SlotPolicies {
        SlotPolicies::from_settings(&Settings {
            concurrent_requests_per_domain: concurrency,
            download_delay: Duration::from_millis(delay_ms),
            randomize_download_delay: false,
            ..Settings::default()
        })
    }

    fn req(url: &str, priority: i32) -> Request {
        Request::get(url).unwrap().with_priority(priority)
    }

    fn host_of(r: &Request) -> String {
        r.url.host_str().unwrap().to_string()
    }

    #[test]
    fn ties_rotate_between_slots() {
        let mut s = Scheduler::new(policies(8, 0));
        let now = Instant::now();
        for i in 0..3 {
            s.push("a", req(&format!("http://a/{i}"), 0), now);
            s.push("b", req(&format!("http://b/{i}"), 0), now);
        }
        // Each pop raises that slot's active count, so the other slot wins next.
        let order: Vec<String> = (0..4)
            .map(|_| host_of(&s.pop(now).unwrap().request))
            .collect();
        assert_eq!(order, ["a", "b", "a", "b"]);
    }

    #[test]
    fn prefers_the_slot_with_fewest_active() {
        let mut s = Scheduler::new(policies(8, 0));
        let now = Instant::now();
        for i in 0..3 {
            s.push("a", req(&format!("http://a/{i}"), 0), now);
        }
        let a = s.pop(now).unwrap().slot;
        s.pop(now).unwrap();
        s.push("b", req("http://b/0", 0), now);
        assert_eq!(host_of(&s.pop(now).unwrap().request), "b");
        s.finish(a, now);
        s.finish(a, now);
        assert_eq!(host_of(&s.pop(now).unwrap().request), "a");
    }

    #[test]
    fn priority_orders_within_a_slot_only() {
        let mut s = Scheduler::new(policies(1, 0));
        let now = Instant::now();
        s.push("a", req("http://a/low", 0), now);
        s.push("a", req("http://a/high", 10), now);
        s.push("a", req("http://a/low2", 0), now);
        s.push("b", req("http://b/x", -100), now);
        let first = s.pop(now).unwrap();
        let id = first.slot;
        assert_eq!(first.request.url.path(), "/high");
        // Slot a is at its cap of 1: the low-priority b goes rather than waiting behind a.
        assert_eq!(s.pop(now).unwrap().request.url.path(), "/x");
        assert!(s.pop(now).is_none());
        s.finish(id, now);
        assert_eq!(
            s.pop(now).unwrap().request.url.path(),
            "/low",
            "FIFO within a priority"
        );
    }

    #[test]
    fn a_delayed_slot_does_not_hold_back_others() {
        let mut s = Scheduler::new(policies(8, 1000));
        let now = Instant::now();
        for i in 0..3 {
            s.push("slow", req(&format!("http://slow/{i}"), 100), now);
        }
        s.push("fast", req("http://fast/0", 0), now);
        assert_eq!(host_of(&s.pop(now).unwrap().request), "slow");
        assert_eq!(host_of(&s.pop(now).unwrap().request), "fast");
        assert!(s.pop(now).is_none(), "slow waits for its delay");
        let later = now + Duration::from_secs(1) + crate::downloader::slot::SEND_MARGIN;
        assert_eq!(s.next_wakeup(), Some(later));
        assert_eq!(host_of(&s.pop(later).unwrap().request), "slow");
    }

    #[test]
    fn slot_overrides_apply_to_new_slots() {
        let mut settings = Settings::default();
        settings
            .set(
                "DOWNLOAD_SLOTS",
                r#"{"a": {"concurrency": 1, "delay": 2.0}}"#,
            )
            .unwrap();
        let p = SlotPolicies::from_settings(&settings);
        assert_eq!(p.for_key("a").concurrency, 1);
        assert_eq!(p.for_key("a").delay, Duration::from_secs(2));
        assert_eq!(p.for_key("b").concurrency, 8);
    }

    #[test]
    fn admit_filters_duplicates_unless_told_not_to() {
        let mut s = Scheduler::new(policies(8, 0));
        assert!(s.admit(&mut req("http://a/x#1", 0)));
        assert!(!s.admit(&mut req("http://a/x#2", 0)));
        let mut again = req("http://a/x", 0);
        again.dont_filter = true;
        assert!(s.admit(&mut again));
    }
}
