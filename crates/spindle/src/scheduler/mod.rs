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
use std::collections::{BTreeSet, BinaryHeap, HashMap, HashSet};
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::SeedableRng;

use crate::downloader::slot::{Pacing, SendGate, Slot, SlotPolicy, SlotStats};
use crate::request::Request;
use crate::settings::Settings;
use crate::stats::{SlotTable, Stats};
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

/// A request waiting in its slot. The request is boxed: most slots of a broad
/// crawl hold one or two, and a heap's first allocation has room for four, so
/// inline `Request`s (about 500 bytes each) would cost 2 KB per queueing host.
struct Queued {
    priority: i32,
    seq: u64,
    queued_at: Instant,
    request: Box<Request>,
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
    /// The entry this slot has in `ready` (or in `ready_robots`, when
    /// the flag is set), if it is there.
    ready_key: Option<(usize, u64, bool)>,
    /// The wake-up time this slot has in `timers`, if any (older heap entries are stale).
    timer: Option<Instant>,
    /// The last time a request was queued, started or finished here (for the slot GC).
    last_seen: Instant,
}

/// The frontier, the slots and the duplicate filter.
pub struct Scheduler {
    policies: SlotPolicies,
    slots: Vec<SlotEntry>,
    by_key: HashMap<String, SlotId>,
    /// Slots that may start a request now: (active, last pick, id).
    ready: BTreeSet<(usize, u64, SlotId)>,
    /// The same for slots whose next request is a robots.txt: they take
    /// turns with the others while fewer than `robots_budget` robots.txt
    /// fetches are on the wire, so a wave of new hosts in a broad crawl
    /// cannot fill `CONCURRENT_REQUESTS` with robots.txt alone. When no page
    /// is ready, robots.txt may go past the budget: it only keeps pages from
    /// being pushed out, and robots.txt fetches that never answer must not
    /// stop every new host from starting.
    ready_robots: BTreeSet<(usize, u64, SlotId)>,
    robots_budget: usize,
    robots_in_flight: usize,
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
    /// Ids of slots the GC dropped, for reuse.
    free: Vec<SlotId>,
    /// The figures of slots the GC dropped: totals, and the top slots.
    pub retired: SlotTable,
    /// robots.txt `Crawl-delay` floors of dropped slots, applied again if they come back.
    retired_floors: HashMap<String, Duration>,
    /// Slots given up after `SLOT_MAX_EXCEPTIONS`: requests for them are dropped.
    given_up: HashSet<String>,
    /// Whether `dupefilter/filtered` counts duplicates (see [`Scheduler::count_duplicates`]).
    count_duplicates: bool,
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
    /// The first number of this run: lower ones were admitted by an earlier run.
    first_id: u64,
    sink: Box<dyn FnMut(JobOp) + Send>,
    /// What each request dequeued and not yet done has added to the
    /// counters. A snapshot of the counters stored with a commit leaves these
    /// out: such a request is still pending in the store, so a resumed run
    /// fetches it again and counts it then, once.
    open: HashMap<u64, Stats>,
}

impl JobLog {
    /// Numbers requests from `next_id` on and hands every operation to `sink`.
    pub fn new(next_id: u64, sink: Box<dyn FnMut(JobOp) + Send>) -> Self {
        JobLog {
            next_id: next_id.max(1),
            first_id: next_id.max(1),
            sink,
            open: HashMap::new(),
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
            ready_robots: BTreeSet::new(),
            robots_budget: usize::MAX,
            robots_in_flight: 0,
            timers: BinaryHeap::new(),
            dupefilter: DupeFilter::default(),
            queued: 0,
            seq: 0,
            picks: 0,
            rng: SmallRng::from_entropy(),
            job: None,
            window: None,
            free: Vec::new(),
            retired: SlotTable::default(),
            retired_floors: HashMap::new(),
            given_up: HashSet::new(),
            count_duplicates: true,
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

    /// Adds to a job request's counters, while it is open, what it just added
    /// to the crawl's (see [`JobLog`]'s `open`).
    pub fn charge(&mut self, id: u64, key: &str, n: u64) {
        if let Some(open) = self.job.as_mut().and_then(|job| job.open.get_mut(&id)) {
            open.inc_by(key, n);
        }
    }

    /// The counters added by the job's requests that are not done yet.
    pub fn open_charges(&self) -> Stats {
        let mut all = Stats::default();
        if let Some(job) = &self.job {
            for open in job.open.values() {
                all.merge(open);
            }
        }
        all
    }

    /// Whether `dupefilter/filtered` counts the duplicates from now on. A
    /// resumed job's start requests are seen already; counting them again
    /// would count them once per run.
    pub fn count_duplicates(&mut self, count: bool) {
        self.count_duplicates = count;
    }

    /// Takes a resumed job's seen set, in place of the one it has.
    pub fn restore_seen(&mut self, seen: DupeFilter) {
        self.dupefilter = seen;
    }

    /// Records the request's fingerprint (method, canonical URL, body) as
    /// seen; false when it is a duplicate to drop. With a job, a page
    /// request gets its number and is recorded as pending.
    pub fn admit(&mut self, request: &mut Request) -> bool {
        let fp = (!request.dont_filter).then(|| request.fingerprint());
        let new = fp.is_none_or(|fp| self.dupefilter.insert_fingerprint(fp));
        if !new {
            if self.count_duplicates {
                self.stats.inc("dupefilter/filtered");
            }
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
            job.open.remove(&id);
            (job.sink)(JobOp::Done(queue, id, page));
        }
    }

    /// Whether the slot with this key was given up (`SLOT_MAX_EXCEPTIONS`).
    pub fn is_given_up(&self, slot_key: &str) -> bool {
        self.given_up.contains(slot_key)
    }

    /// Queues an admitted request in the named slot, creating the slot if needed.
    pub fn push(&mut self, slot_key: &str, request: Request, now: Instant) {
        let id = self.slot_id(slot_key);
        match self.job.as_mut().filter(|_| request.job != 0) {
            Some(job) => {
                if let Some(open) = job.open.get_mut(&request.job) {
                    // Back after a retry, or from a dead worker.
                    open.inc("scheduler/enqueued");
                    self.stats.inc("scheduler/enqueued");
                } else if request.job >= job.first_id {
                    self.stats.inc("scheduler/enqueued");
                }
                // Else a request an earlier run admitted (and counted) comes back.
            }
            None => self.stats.inc("scheduler/enqueued"),
        }
        let request = match &mut self.window {
            // A per-IP slot gathers several hosts' queues: those stay whole in memory.
            Some(window) if request.job != 0 && request.queue_key() == slot_key => {
                let in_memory = self.slots[id].queue.len();
                match window.spill(slot_key, request, in_memory) {
                    Some(request) => request,
                    None => {
                        self.stats.inc("scheduler/enqueued/disk");
                        return;
                    }
                }
            }
            _ => request,
        };
        self.seq += 1;
        self.slots[id].last_seen = now;
        self.slots[id].queue.push(Queued {
            priority: request.priority,
            seq: self.seq,
            queued_at: now,
            request: Box::new(request),
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
        let page = self.ready.first();
        let robots = self
            .ready_robots
            .first()
            .filter(|_| self.robots_in_flight < self.robots_budget || page.is_none());
        let &(_, _, id) = match (page, robots) {
            (Some(p), Some(r)) => p.min(r),
            (p, r) => p.or(r)?,
        };
        self.picks += 1;
        let entry = &mut self.slots[id];
        let queued = entry.queue.pop().expect("a ready slot has queued requests");
        if queued.request.is_robots() {
            self.robots_in_flight += 1;
        }
        entry.last_pick = self.picks;
        entry.last_seen = now;
        entry.slot.stats.wait_seconds += now.duration_since(queued.queued_at).as_secs_f64();
        let pacing = entry.slot.start(now, &mut self.rng);
        self.queued -= 1;
        self.stats.inc("scheduler/dequeued");
        let job_id = queued.request.job;
        if let Some(job) = self.job.as_mut().filter(|_| job_id != 0) {
            job.open
                .entry(job_id)
                .or_default()
                .inc("scheduler/dequeued");
        }
        if self.slots[id].queue.len() < window::WINDOW / 2 {
            self.top_up(id, now);
        }
        self.refresh(id, now);
        Some(Dispatch {
            slot: id,
            request: *queued.request,
            pacing,
        })
    }

    /// At most `budget` robots.txt fetches on the wire at once.
    pub fn set_robots_budget(&mut self, budget: usize) {
        self.robots_budget = budget.max(1);
    }

    /// A robots.txt request [`Scheduler::pop`] gave has left the wire
    /// (answered, failed, or dropped before it was sent).
    pub fn robots_finished(&mut self) {
        self.robots_in_flight = self.robots_in_flight.saturating_sub(1);
    }

    /// A request of this slot has left the wire.
    pub fn finish(&mut self, id: SlotId, now: Instant) {
        self.slots[id].last_seen = now;
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

    /// Caps a slot's concurrency below its policy (`None` lifts the cap).
    pub fn limit_concurrency(&mut self, id: SlotId, cap: Option<usize>, now: Instant) {
        self.slots[id].slot.limit_concurrency(cap);
        self.refresh(id, now);
    }

    /// Counts a failed download against the slot's figures.
    pub fn count_error(&mut self, id: SlotId) {
        self.slots[id].slot.stats.errors += 1;
    }

    /// Whether a request of this slot just started will likely leave a
    /// connection that another of its requests reuses: one is queued and will
    /// have to wait, for the delay or for a free place under the slot's cap.
    /// (Queued requests that can start at once open connections of their own.)
    pub fn expects_reuse(&self, id: SlotId) -> bool {
        let e = &self.slots[id];
        let queued = e.queue.len();
        let room = e.slot.policy.concurrency.saturating_sub(e.slot.active());
        queued > 0 && (!e.slot.policy.delay.is_zero() || queued > room)
    }

    /// Gives a slot up: requests queued in it are returned, and
    /// [`Scheduler::is_given_up`] is true for its key from now on.
    pub fn give_up(&mut self, id: SlotId, now: Instant) -> Vec<Request> {
        let entry = &mut self.slots[id];
        self.given_up.insert(entry.key.clone());
        let drained: Vec<Request> = std::mem::take(&mut entry.queue)
            .into_iter()
            .map(|q| *q.request)
            .collect();
        self.queued -= drained.len();
        self.refresh(id, now);
        drained
    }

    /// Drops every slot with nothing queued or on the wire whose last
    /// activity plus its delay is older than `idle` (Scrapy's slot GC). Its
    /// figures go to [`Scheduler::retired`]; a robots.txt `Crawl-delay` floor
    /// is kept and applied again if the slot comes back. Returns how many.
    pub fn gc(&mut self, now: Instant, idle: Duration, top: usize) -> usize {
        let mut dropped = 0;
        for id in 0..self.slots.len() {
            let entry = &self.slots[id];
            if entry.key.is_empty()
                || !entry.queue.is_empty()
                || entry.slot.active() > 0
                || entry.last_seen + entry.slot.delay() + idle > now
            {
                continue;
            }
            let entry = std::mem::replace(&mut self.slots[id], vacant(now));
            self.by_key.remove(&entry.key);
            if !entry.slot.delay_floor().is_zero() {
                self.retired_floors
                    .insert(entry.key.clone(), entry.slot.delay_floor());
            }
            self.retired.add(&entry.key, &entry.slot.stats, top);
            self.free.push(id);
            dropped += 1;
        }
        dropped
    }

    /// Gives back the memory of dropped slots where it can: vacant places at
    /// the end of the table, and the spare capacity of its indexes.
    pub fn shrink(&mut self) {
        while self.slots.last().is_some_and(|e| e.key.is_empty()) {
            self.slots.pop();
        }
        let len = self.slots.len();
        self.free.retain(|id| *id < len);
        self.slots.shrink_to_fit();
        self.free.shrink_to_fit();
        self.by_key.shrink_to_fit();
    }

    /// Slots alive now.
    pub fn slot_count(&self) -> usize {
        self.by_key.len()
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
                request: Box::new(request),
                queued_at: now,
            });
            self.queued += 1;
        }
        self.refresh(id, now);
    }

    pub fn slot_key(&self, id: SlotId) -> &str {
        &self.slots[id].key
    }

    /// Every live slot's figures, by slot key (the GC's dropped ones are in [`Scheduler::retired`]).
    pub fn slot_stats(&self) -> impl Iterator<Item = (&str, &SlotStats)> {
        self.slots
            .iter()
            .filter(|e| !e.key.is_empty())
            .map(|e| (e.key.as_str(), &e.slot.stats))
    }

    fn slot_id(&mut self, key: &str) -> SlotId {
        if let Some(&id) = self.by_key.get(key) {
            return id;
        }
        let now = Instant::now();
        let id = self.free.pop().unwrap_or(self.slots.len());
        // A reused id reuses its gate's cells too: that can only space the
        // new slot's first sends further apart, never closer.
        let gate = self
            .gates
            .as_ref()
            .map_or_else(SendGate::default, |make| make(id));
        let mut slot = self.policies.new_slot(key, gate);
        if let Some(floor) = self.retired_floors.remove(key) {
            slot.set_delay_floor(floor);
        }
        let entry = SlotEntry {
            key: key.to_string(),
            slot,
            queue: BinaryHeap::new(),
            last_pick: 0,
            ready_key: None,
            timer: None,
            last_seen: now,
        };
        if id == self.slots.len() {
            self.slots.push(entry);
        } else {
            self.slots[id] = entry;
        }
        self.by_key.insert(key.to_string(), id);
        id
    }

    fn wake_due(&mut self, now: Instant) {
        while let Some(&Reverse((t, id))) = self.timers.peek() {
            if t > now {
                break;
            }
            self.timers.pop();
            if self.slots.get(id).is_some_and(|e| e.timer == Some(t)) {
                self.slots[id].timer = None;
                self.refresh(id, now);
            }
        }
    }

    /// Puts the slot where its state says it belongs: ready, waiting on a timer, or neither.
    fn refresh(&mut self, id: SlotId, now: Instant) {
        let entry = &mut self.slots[id];
        if let Some((active, pick, robots)) = entry.ready_key.take() {
            let set = if robots {
                &mut self.ready_robots
            } else {
                &mut self.ready
            };
            set.remove(&(active, pick, id));
        }
        if entry.queue.is_empty() || !entry.slot.has_capacity() {
            return;
        }
        match entry.slot.delayed_until(now) {
            None => {
                let robots = entry.queue.peek().is_some_and(|q| q.request.is_robots());
                let key = (entry.slot.active(), entry.last_pick);
                let set = if robots {
                    &mut self.ready_robots
                } else {
                    &mut self.ready
                };
                set.insert((key.0, key.1, id));
                entry.ready_key = Some((key.0, key.1, robots));
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

/// A dropped slot's place, until a new slot reuses its id.
fn vacant(now: Instant) -> SlotEntry {
    SlotEntry {
        key: String::new(),
        slot: Slot::new(
            SlotPolicy {
                concurrency: 1,
                delay: Duration::ZERO,
                randomize_delay: false,
            },
            SendGate::default(),
        ),
        queue: BinaryHeap::new(),
        last_pick: 0,
        ready_key: None,
        timer: None,
        last_seen: now,
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
    fn robots_fetches_stay_within_their_budget_and_pages_go_on() {
        let mut s = Scheduler::new(policies(8, 0));
        s.set_robots_budget(2);
        let now = Instant::now();
        for i in 0..5 {
            let mut robots = req(&format!("http://new{i}.test/robots.txt"), 1000);
            robots.purpose = crate::request::Purpose::Robots {
                origin: format!("http://new{i}.test"),
            };
            s.push(&format!("new{i}.test"), robots, now);
        }
        for i in 0..4 {
            s.push("known.test", req(&format!("http://known.test/{i}"), 0), now);
        }
        let mut robots_out = 0;
        let mut pages_out = 0;
        for _ in 0..6 {
            let d = s.pop(now).unwrap();
            if d.request.is_robots() {
                robots_out += 1;
            } else {
                pages_out += 1;
            }
            assert!(robots_out <= 2, "at most two robots.txt on the wire");
        }
        assert_eq!(
            (robots_out, pages_out),
            (2, 4),
            "the pages were not pushed out"
        );
        // No page is ready now: the budget yields, so robots.txt fetches that
        // hang cannot keep new hosts from starting.
        assert!(s.pop(now).unwrap().request.is_robots());
        s.push("known.test", req("http://known.test/4", 0), now);
        s.push("known.test", req("http://known.test/5", 0), now);
        for _ in 0..2 {
            assert!(
                !s.pop(now).unwrap().request.is_robots(),
                "with pages ready, the budget holds again"
            );
        }
        // The two robots.txt left.
        assert!(s.pop(now).unwrap().request.is_robots());
        assert!(s.pop(now).unwrap().request.is_robots());
        assert!(s.pop(now).is_none());
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
        let later = now + Duration::from_secs(1);
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
    fn gc_drops_idle_slots_and_keeps_their_crawl_delay() {
        let mut s = Scheduler::new(policies(8, 0));
        let t0 = Instant::now();
        s.push("idle", req("http://idle/0", 0), t0);
        s.push("busy", req("http://busy/0", 0), t0);
        s.push("busy", req("http://busy/1", 0), t0);
        let idle = s.slot("idle");
        s.set_delay_floor(idle, Duration::from_secs(2), t0);
        let a = s.pop(t0).unwrap();
        let b = s.pop(t0).unwrap();
        let (first_idle, first_busy) = if a.slot == idle { (a, b) } else { (b, a) };
        s.finish(first_idle.slot, t0);
        s.finish(first_busy.slot, t0);
        let minute = Duration::from_secs(60);
        // Not yet idle for a minute past its delay (2 s floor).
        assert_eq!(s.gc(t0 + minute, minute, 10), 0);
        // "busy" still has a request queued; "idle" goes.
        assert_eq!(s.gc(t0 + minute + Duration::from_secs(3), minute, 10), 1);
        assert_eq!(s.slot_count(), 1);
        assert_eq!(
            std::mem::take(&mut s.retired).finish().0["idle"].requests,
            1
        );
        // When it comes back, its Crawl-delay floor is applied again.
        let later = t0 + Duration::from_secs(100);
        s.push("idle", req("http://idle/1", 0), later);
        let id = s.slot("idle");
        assert_eq!(s.slots[id].slot.delay_floor(), Duration::from_secs(2));
    }

    #[test]
    fn a_given_up_slot_is_drained() {
        let mut s = Scheduler::new(policies(8, 0));
        let now = Instant::now();
        s.push("dead", req("http://dead/0", 0), now);
        s.push("dead", req("http://dead/1", 0), now);
        let id = s.slot("dead");
        assert_eq!(s.give_up(id, now).len(), 2);
        assert!(s.is_given_up("dead"));
        assert!(s.is_empty());
        assert!(s.pop(now).is_none());
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
