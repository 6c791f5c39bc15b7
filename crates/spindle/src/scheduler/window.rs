//! Bounded memory for a job's frontier: each slot keeps a small window of
//! requests in memory, and the rest stay in the job's store until the window
//! runs low.
//!
//! Every request of a job is in the store from its admission (see
//! [`super::JobOp::Push`]), so spilling one costs nothing but forgetting it.
//! Per queue, `cursor` is the highest request number held in memory: the
//! requests on disk only are exactly those of the queue numbered above it,
//! and a refill reads them back oldest first. Requests that come back to a
//! slot (retries, a dead worker's) are numbered below the cursor and always
//! stay in memory. Within what is on disk, priority is not looked at: those
//! requests come back in admission order (breadth-first), after the window.
//!
//! A spilled request reaches the store with the next commit (every 200 ms).
//! Until then it is kept in memory as well (`recent`), so a window that runs
//! low takes it from there rather than waiting for the commit: on the Rust
//! docs (one host, 21,663 pages, 99.6% of them spilled) waiting held the
//! crawl to 59% of the in-memory speed. Once committed, a request is dropped
//! from `recent` and read back from the store when its turn comes. A queue
//! keeps at most [`RECENT`] of them: past that the oldest is dropped and
//! waits for its commit, as before. Without that bound, the records not yet
//! committed (up to 30,000 at `spindle bench --links 100`) cost about 30 MB.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::warn;

use super::store::PendingReader;
use crate::request::Request;

/// Requests a slot keeps in memory with a job; more wait on disk.
pub const WINDOW: usize = 64;

/// Spilled requests a queue keeps in memory until they are committed: at
/// 5,000 pages/s, about two commit intervals' worth of new links.
pub const RECENT: usize = 2048;

/// How often a window that came up short is tried again.
const RETRY: Duration = Duration::from_millis(20);

#[derive(Default, Debug)]
struct Spill {
    /// Requests of this queue on disk only.
    count: usize,
    /// The highest request number of this queue held in memory.
    cursor: u64,
    /// The highest number spilled, to tell "not committed yet" from "gone".
    last_spilled: u64,
    /// Spilled requests that may not be committed yet, oldest first.
    recent: VecDeque<Request>,
    /// The highest number dropped from `recent` to keep it short: up to it,
    /// requests are read from the store only.
    dropped: u64,
}

/// Drops the requests the store holds now (numbered up to `committed`).
fn forget_committed(recent: &mut VecDeque<Request>, committed: u64) {
    while recent.front().is_some_and(|r| r.job <= committed) {
        recent.pop_front();
    }
}

/// The on-disk part of a job's frontier.
pub struct Window {
    reader: Box<dyn PendingReader>,
    /// The highest request number the store has committed.
    committed: Arc<AtomicU64>,
    spill: HashMap<String, Spill>,
    /// Queues whose window came up short because their requests were not committed yet.
    short: HashSet<String>,
    last_retry: Instant,
    spilled: usize,
}

impl Window {
    /// A window over `reader`; `committed` is raised by whoever commits.
    pub fn new(reader: Box<dyn PendingReader>, committed: Arc<AtomicU64>) -> Self {
        Window {
            reader,
            committed,
            spill: HashMap::new(),
            short: HashSet::new(),
            last_retry: Instant::now(),
            spilled: 0,
        }
    }

    /// A resumed queue: `on_disk` requests above `cursor` wait in the store.
    pub fn resume(&mut self, queue: String, cursor: u64, on_disk: usize) {
        if on_disk > 0 {
            self.spilled += on_disk;
            self.short.insert(queue.clone());
            self.spill.insert(
                queue,
                Spill {
                    count: on_disk,
                    cursor,
                    last_spilled: 0,
                    recent: VecDeque::new(),
                    dropped: 0,
                },
            );
        }
    }

    /// Requests on disk only.
    pub fn spilled(&self) -> usize {
        self.spilled
    }

    /// Takes the request to leave on disk, or gives it back for the slot,
    /// which holds `in_memory`.
    pub fn spill(&mut self, queue: &str, request: Request, in_memory: usize) -> Option<Request> {
        let id = request.job;
        let committed = self.committed.load(Ordering::Acquire);
        let sp = match self.spill.get_mut(queue) {
            Some(sp) => sp,
            None => self.spill.entry(queue.to_string()).or_default(),
        };
        if id <= sp.cursor {
            return Some(request);
        }
        if sp.count > 0 || in_memory >= WINDOW {
            sp.count += 1;
            sp.last_spilled = sp.last_spilled.max(id);
            self.spilled += 1;
            forget_committed(&mut sp.recent, committed);
            if sp.recent.len() >= RECENT {
                if let Some(oldest) = sp.recent.pop_front() {
                    sp.dropped = oldest.job;
                }
            }
            sp.recent.push_back(request);
            return None;
        }
        sp.cursor = id;
        Some(request)
    }

    /// Whether this queue has requests on disk to bring back.
    pub fn has_spilled(&self, queue: &str) -> bool {
        self.spill.get(queue).is_some_and(|sp| sp.count > 0)
    }

    /// Up to `room` of the queue's requests from disk, oldest first.
    pub fn refill(&mut self, queue: &str, room: usize) -> Vec<Request> {
        let Some(sp) = self.spill.get_mut(queue) else {
            return Vec::new();
        };
        let want = room.min(sp.count);
        if want == 0 {
            return Vec::new();
        }
        let committed = self.committed.load(Ordering::Acquire);
        forget_committed(&mut sp.recent, committed);
        // The store holds what is committed; what comes after is in `recent`.
        let on_disk = committed > sp.cursor || sp.recent.is_empty() || sp.dropped > sp.cursor;
        let rows = if on_disk {
            match self.reader.pending(queue, sp.cursor, want) {
                Ok(rows) => rows,
                Err(error) => {
                    warn!(%error, queue, "cannot read the job's queue; trying again later");
                    self.short.insert(queue.to_string());
                    return Vec::new();
                }
            }
        } else {
            Vec::new()
        };
        let mut out = Vec::with_capacity(want);
        let mut taken = rows.len();
        for row in &rows {
            sp.cursor = row.id;
            match postcard::from_bytes::<Request>(&row.request) {
                Ok(request) => out.push(request),
                Err(error) => {
                    warn!(%error, id = row.id, "a stored request cannot be read; skipped")
                }
            }
        }
        // A commit since `forget_committed` may have put some of `recent` on disk too.
        forget_committed(&mut sp.recent, sp.cursor);
        // Requests dropped from `recent` and not committed yet come before it: wait for them.
        while taken < want && sp.dropped <= sp.cursor {
            let Some(request) = sp.recent.pop_front() else {
                break;
            };
            sp.cursor = request.job;
            out.push(request);
            taken += 1;
        }
        sp.count -= taken;
        self.spilled -= taken;
        if taken < want {
            if self.committed.load(Ordering::Acquire) >= sp.last_spilled {
                // Everything spilled is committed, and the store has no more:
                // nothing is left to wait for.
                self.spilled -= sp.count;
                sp.count = 0;
            } else {
                self.short.insert(queue.to_string());
            }
        }
        out
    }

    /// Queues to try again now (their requests may be committed by now).
    pub fn due(&mut self, now: Instant) -> Vec<String> {
        if self.short.is_empty() || now < self.last_retry + RETRY {
            return Vec::new();
        }
        self.last_retry = now;
        self.short.drain().collect()
    }

    /// When to look again at a queue that came up short, if one did.
    pub fn next_retry(&self) -> Option<Instant> {
        (!self.short.is_empty()).then_some(self.last_retry + RETRY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::store::Pending;
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    type Shared = Arc<Mutex<BTreeMap<(String, u64), Vec<u8>>>>;

    struct Fake(Shared);

    impl PendingReader for Fake {
        fn pending(
            &self,
            queue: &str,
            after: u64,
            max: usize,
        ) -> Result<Vec<Pending>, crate::scheduler::store::StoreError> {
            Ok(self
                .0
                .lock()
                .unwrap()
                .range((queue.to_string(), after + 1)..=(queue.to_string(), u64::MAX))
                .take(max)
                .map(|((q, id), r)| Pending {
                    id: *id,
                    queue: q.clone(),
                    request: r.clone(),
                })
                .collect())
        }
    }

    fn stored(id: u64) -> Vec<u8> {
        postcard::to_allocvec(&request(id)).unwrap()
    }

    fn request(id: u64) -> Request {
        let mut r = Request::get(&format!("http://a/{id}")).unwrap();
        r.job = id;
        r
    }

    #[test]
    fn spills_past_the_window_and_reads_back_oldest_first() {
        let store: Shared = Arc::default();
        let committed = Arc::new(AtomicU64::new(0));
        let mut w = Window::new(Box::new(Fake(store.clone())), committed.clone());
        let mut in_memory = 0;
        for id in 1..=100 {
            if w.spill("a", request(id), in_memory).is_some() {
                in_memory += 1;
            }
        }
        assert_eq!((in_memory, w.spilled()), (WINDOW, 36));
        // A retry (numbered below the cursor) stays in memory, full window or not.
        assert!(w.spill("a", request(3), in_memory).is_some());

        // Not committed yet: they come back from memory, without waiting for the store.
        let back: Vec<u64> = w.refill("a", 16).iter().map(|r| r.job).collect();
        assert_eq!(back, (65..=80).collect::<Vec<_>>());
        assert_eq!(w.spilled(), 20);
        assert!(w.next_retry().is_none(), "nothing to wait for");
        assert!(w.spill("a", request(101), 0).is_none(), "behind the others");

        // Committed since: memory forgets them, and the store gives them back.
        for id in 65..=100 {
            let mut r = request(id);
            r.priority = 1; // the stored copy
            store
                .lock()
                .unwrap()
                .insert(("a".into(), id), postcard::to_allocvec(&r).unwrap());
        }
        committed.store(100, Ordering::Release);
        let back: Vec<(u64, i32)> = w
            .refill("a", 64)
            .iter()
            .map(|r| (r.job, r.priority))
            .collect();
        let want: Vec<(u64, i32)> = (81..=100).map(|id| (id, 1)).chain([(101, 0)]).collect();
        assert_eq!(back, want, "81–100 from the store, 101 from memory");
        assert_eq!(w.spilled(), 0);
        assert!(!w.has_spilled("a"));
        assert!(
            w.spill("a", request(102), 0).is_some(),
            "an empty disk part takes no more"
        );
    }

    #[test]
    fn past_the_bound_in_memory_the_oldest_wait_for_their_commit() {
        let store: Shared = Arc::default();
        let committed = Arc::new(AtomicU64::new(0));
        let mut w = Window::new(Box::new(Fake(store.clone())), committed.clone());
        let last = (WINDOW + RECENT + 10) as u64;
        for id in 1..=last {
            let in_memory = (id as usize - 1).min(WINDOW);
            w.spill("a", request(id), in_memory);
        }
        // 65–74 were dropped from memory and are not committed: nothing may overtake them.
        assert!(w.refill("a", 64).is_empty());
        assert!(w.next_retry().is_some(), "tried again after the commit");
        for id in 65..=74 {
            store.lock().unwrap().insert(("a".into(), id), stored(id));
        }
        committed.store(74, Ordering::Release);
        let back: Vec<u64> = w.refill("a", 64).iter().map(|r| r.job).collect();
        assert_eq!(back, (65..=128).collect::<Vec<_>>());
    }

    #[test]
    fn a_count_the_store_cannot_meet_is_dropped_once_all_is_committed() {
        let store: Shared = Arc::default();
        let committed = Arc::new(AtomicU64::new(50));
        let mut w = Window::new(Box::new(Fake(store.clone())), committed);
        // A resumed queue whose counter says 3 on disk but the store has 1.
        w.resume("a".into(), 10, 3);
        store.lock().unwrap().insert(("a".into(), 11), stored(11));
        assert_eq!(w.refill("a", 64).len(), 1);
        assert_eq!(w.spilled(), 0, "no wait for requests that will never come");
    }
}
