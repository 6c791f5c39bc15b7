//! Where a job's frontier, seen set and slot state live between runs.
//!
//! One narrow interface, [`FrontierStore`], with homes behind it: memory
//! ([`MemoryStore`], which also pins down the semantics in tests), an
//! embedded store on disk ([`super::disk::DiskStore`], used by `JOBDIR`).
//! Redis (`REDIS_URL`, `crate::distributed`) keeps the same frontier, seen
//! set and slot state, but shares the politeness too, so a request is taken
//! there by a script rather than read back through this interface. Every change reaches the store as a [`Commit`], applied all
//! or nothing, so a batch can carry thousands of requests in one write (group
//! commit) and a crash leaves the state of some commit, never half of one.
//!
//! The store keeps requests from admission until they are done, including
//! while they are on the wire: a request in flight at a crash is still
//! pending in the store, so it is queued again on resume. Politeness (caps,
//! delays, the ready index, timers) is never stored: it stays in the
//! scheduler's memory.

use std::collections::{BTreeMap, HashMap, HashSet};

/// A store operation failed: the job cannot record its progress.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store's files could not be read or written (disk full, permissions...).
    #[error("job store {path}: {message}")]
    Io {
        /// The job directory.
        path: String,
        /// What failed.
        message: String,
    },
    /// Another process holds the job: two crawls must not share one job.
    #[error("job {path} is in use by another spindle process; wait for it to stop, or use another JOBDIR")]
    Busy {
        /// The job directory.
        path: String,
    },
    /// The store holds something this version cannot read.
    #[error("job store {path} is not readable by this version: {message}")]
    Corrupt {
        /// The job directory.
        path: String,
        /// What could not be decoded.
        message: String,
    },
}

/// A request waiting in the frontier, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    /// Its number, unique in the job and increasing in admission order.
    pub id: u64,
    /// The queue it is filed under (named slot or host).
    pub queue: String,
    /// The whole request, serialized.
    pub request: Vec<u8>,
}

/// One atomic step of a job's progress.
#[derive(Debug, Default, Clone)]
pub struct Commit {
    /// Newly admitted requests.
    pub pushed: Vec<Pending>,
    /// Fingerprints newly seen by the duplicate filter.
    pub seen: Vec<u64>,
    /// Requests finished (queue, id): their items, if any, are in the output
    /// below `output_len`, and the requests they led to are in `pushed` of
    /// this or an earlier commit.
    pub done: Vec<(String, u64)>,
    /// How many of `done` were pages that reached the spider.
    pub pages: u64,
    /// The output's length once the items of `done` are written.
    pub output_len: Option<u64>,
    /// The next request number to hand out.
    pub next_id: Option<u64>,
    /// The crawl's counters, as JSON.
    pub stats: Option<String>,
    /// Per-queue state (robots.txt, Crawl-delay...), replaced whole.
    pub slot_state: Vec<(String, Vec<u8>)>,
    /// Whether the crawl has finished.
    pub finished: Option<bool>,
    /// Wall-clock time of this commit, seconds since the Unix epoch.
    pub at: f64,
}

impl Commit {
    /// Whether this commit would change nothing.
    pub fn is_empty(&self) -> bool {
        self.pushed.is_empty()
            && self.seen.is_empty()
            && self.done.is_empty()
            && self.output_len.is_none()
            && self.next_id.is_none()
            && self.stats.is_none()
            && self.slot_state.is_empty()
            && self.finished.is_none()
    }
}

/// What a job holds as of its last commit.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct JobState {
    /// The next request number to hand out.
    pub next_id: u64,
    /// The output's committed length; `None` before the first commit.
    pub output_len: Option<u64>,
    /// Pages the spider has finished.
    pub pages_done: u64,
    /// Fingerprints in the seen set.
    pub seen: u64,
    /// Requests waiting (including those on the wire at the last commit).
    pub queued: u64,
    /// Whether the crawl ran to its end.
    pub finished: bool,
    /// Seconds since the Unix epoch of the last commit; 0 before any.
    pub last_commit: f64,
    /// The crawl's counters at the last commit, as JSON.
    pub stats: Option<String>,
}

/// The interface every home of a job's state implements. It is narrow on
/// purpose: batched writes in, ordered reads out, so that a networked home
/// (Redis) pays one round trip a commit.
pub trait FrontierStore: Send {
    /// Applies a commit atomically.
    fn commit(&mut self, commit: &Commit) -> Result<(), StoreError>;
    /// Up to `max` pending requests of a queue with ids above `after`, lowest id first.
    fn pending(&self, queue: &str, after: u64, max: usize) -> Result<Vec<Pending>, StoreError>;
    /// Every queue with pending requests, and how many.
    fn backlog(&self) -> Result<Vec<(String, u64)>, StoreError>;
    /// Whether the fingerprint is in the seen set.
    fn contains_seen(&self, fp: u64) -> Result<bool, StoreError>;
    /// Calls `each` with every fingerprint in the seen set.
    fn for_each_seen(&self, each: &mut dyn FnMut(u64)) -> Result<(), StoreError>;
    /// A queue's stored state, if any.
    fn slot_state(&self, queue: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Every queue's stored state.
    fn slot_states(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError>;
    /// The job's figures as of the last commit.
    fn state(&self) -> Result<JobState, StoreError>;
}

/// Reads a job's pending requests while another thread commits to the store.
pub trait PendingReader: Send {
    /// As [`FrontierStore::pending`]; sees what is committed.
    fn pending(&self, queue: &str, after: u64, max: usize) -> Result<Vec<Pending>, StoreError>;
}

/// The memory home: the semantics of a store, with nothing kept after the process.
#[derive(Default)]
pub struct MemoryStore {
    pending: BTreeMap<(String, u64), Vec<u8>>,
    backlog: HashMap<String, u64>,
    seen: HashSet<u64>,
    slots: BTreeMap<String, Vec<u8>>,
    state: JobState,
}

impl FrontierStore for MemoryStore {
    fn commit(&mut self, c: &Commit) -> Result<(), StoreError> {
        for p in &c.pushed {
            if self
                .pending
                .insert((p.queue.clone(), p.id), p.request.clone())
                .is_none()
            {
                *self.backlog.entry(p.queue.clone()).or_default() += 1;
            }
        }
        for (queue, id) in &c.done {
            if self.pending.remove(&(queue.clone(), *id)).is_some() {
                let n = self.backlog.get_mut(queue).expect("counted on push");
                *n -= 1;
                if *n == 0 {
                    self.backlog.remove(queue);
                }
            }
        }
        self.seen.extend(&c.seen);
        for (k, v) in &c.slot_state {
            self.slots.insert(k.clone(), v.clone());
        }
        let s = &mut self.state;
        s.pages_done += c.pages;
        s.output_len = c.output_len.or(s.output_len);
        s.next_id = c.next_id.unwrap_or(s.next_id);
        s.stats = c.stats.clone().or(s.stats.take());
        s.finished = c.finished.unwrap_or(s.finished);
        s.last_commit = c.at;
        Ok(())
    }

    fn pending(&self, queue: &str, after: u64, max: usize) -> Result<Vec<Pending>, StoreError> {
        Ok(self
            .pending
            .range((queue.to_string(), after.saturating_add(1))..=(queue.to_string(), u64::MAX))
            .take(max)
            .map(|((q, id), r)| Pending {
                id: *id,
                queue: q.clone(),
                request: r.clone(),
            })
            .collect())
    }

    fn backlog(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let mut v: Vec<_> = self.backlog.iter().map(|(k, n)| (k.clone(), *n)).collect();
        v.sort();
        Ok(v)
    }

    fn contains_seen(&self, fp: u64) -> Result<bool, StoreError> {
        Ok(self.seen.contains(&fp))
    }

    fn for_each_seen(&self, each: &mut dyn FnMut(u64)) -> Result<(), StoreError> {
        self.seen.iter().for_each(|fp| each(*fp));
        Ok(())
    }

    fn slot_state(&self, queue: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.slots.get(queue).cloned())
    }

    fn slot_states(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        Ok(self
            .slots
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    fn state(&self) -> Result<JobState, StoreError> {
        Ok(JobState {
            seen: self.seen.len() as u64,
            queued: self.pending.len() as u64,
            ..self.state.clone()
        })
    }
}

/// The same checks run against every home, so a new home proves it keeps
/// the semantics by passing them.
#[cfg(test)]
pub(crate) fn check_store(store: &mut dyn FrontierStore) {
    let push = |id, q: &str| Pending {
        id,
        queue: q.to_string(),
        request: vec![id as u8; 3],
    };
    store
        .commit(&Commit {
            pushed: vec![push(1, "a"), push(2, "b"), push(3, "a"), push(4, "a")],
            seen: vec![11, 12, 13],
            next_id: Some(5),
            output_len: Some(0),
            at: 1.0,
            ..Commit::default()
        })
        .unwrap();
    let ids = |v: Vec<Pending>| v.iter().map(|p| p.id).collect::<Vec<_>>();
    assert_eq!(ids(store.pending("a", 0, 10).unwrap()), [1, 3, 4]);
    assert_eq!(ids(store.pending("a", 1, 1).unwrap()), [3]);
    assert_eq!(store.pending("a", 1, 1).unwrap()[0].request, vec![3u8; 3]);
    assert!(store.contains_seen(12).unwrap());
    assert!(!store.contains_seen(14).unwrap());
    store
        .commit(&Commit {
            pushed: vec![push(5, "b")],
            done: vec![("a".into(), 1), ("b".into(), 2)],
            pages: 2,
            output_len: Some(100),
            slot_state: vec![("a".into(), b"robots".to_vec())],
            at: 2.0,
            ..Commit::default()
        })
        .unwrap();
    assert_eq!(
        store.backlog().unwrap(),
        [("a".to_string(), 2), ("b".to_string(), 1)]
    );
    let mut seen = Vec::new();
    store.for_each_seen(&mut |fp| seen.push(fp)).unwrap();
    seen.sort();
    assert_eq!(seen, [11, 12, 13]);
    assert_eq!(
        store.slot_state("a").unwrap().as_deref(),
        Some(&b"robots"[..])
    );
    assert_eq!(store.slot_state("b").unwrap(), None);
    let state = store.state().unwrap();
    assert_eq!(
        (
            state.next_id,
            state.output_len,
            state.pages_done,
            state.seen,
            state.queued
        ),
        (5, Some(100), 2, 3, 3)
    );
    assert_eq!(state.last_commit, 2.0);
    assert!(!state.finished);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_home_keeps_the_semantics() {
        check_store(&mut MemoryStore::default());
    }
}
