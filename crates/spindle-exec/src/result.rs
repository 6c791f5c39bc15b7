//! Result handles shared by [`crate::Pool`] and [`crate::ThreadPool`].

use crate::error::{Error, Result};
use crate::sys::Deadline;
use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

type Callback<R> = Box<dyn FnOnce(&Result<R>) + Send>;

/// Result slots for a batch of `n` items, filled as workers finish.
pub(crate) struct Slots<R> {
    inner: Mutex<Inner<R>>,
    cv: Condvar,
}

struct Inner<R> {
    items: Vec<Option<Result<R>>>,
    filled: Vec<bool>,
    ok: Vec<bool>,
    done: usize,
    order: VecDeque<usize>,
    waiters: usize,
    callback: Option<Callback<R>>,
}

impl<R> Slots<R> {
    pub(crate) fn new(n: usize) -> Arc<Self> {
        Arc::new(Slots {
            inner: Mutex::new(Inner {
                items: (0..n).map(|_| None).collect(),
                filled: vec![false; n],
                ok: vec![false; n],
                done: 0,
                order: VecDeque::new(),
                waiters: 0,
                callback: None,
            }),
            cv: Condvar::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner<R>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn set_callback(&self, cb: Callback<R>) {
        let mut g = self.lock();
        if g.done == g.items.len() && !g.items.is_empty() {
            if let Some(r) = g.items[0].as_ref() {
                cb(r);
            }
        } else {
            g.callback = Some(cb);
        }
    }

    /// Fill item `i` (first write wins).
    pub(crate) fn set(&self, i: usize, r: Result<R>) {
        self.set_batch(i, std::iter::once(r));
    }

    /// Fill items `start..` from `rs` under one lock, with one wake-up.
    pub(crate) fn set_batch(&self, start: usize, rs: impl IntoIterator<Item = Result<R>>) {
        let mut g = self.lock();
        for (k, r) in rs.into_iter().enumerate() {
            let i = start + k;
            if i >= g.items.len() || g.filled[i] {
                continue;
            }
            if let Some(cb) = g.callback.take() {
                cb(&r);
            }
            g.ok[i] = r.is_ok();
            g.items[i] = Some(r);
            g.filled[i] = true;
            g.done += 1;
            g.order.push_back(i);
        }
        let wake = g.waiters > 0;
        drop(g);
        if wake {
            self.cv.notify_all();
        }
    }

    /// Wait until `pred` holds; false on timeout.
    fn wait_until(
        &self,
        deadline: Deadline,
        pred: impl Fn(&Inner<R>) -> bool,
    ) -> (bool, MutexGuard<'_, Inner<R>>) {
        let mut g = self.lock();
        loop {
            if pred(&g) {
                return (true, g);
            }
            let rem = deadline.remaining();
            if rem.is_some_and(|d| d.is_zero()) {
                return (false, g);
            }
            g.waiters += 1;
            g = match rem {
                None => self.cv.wait(g).unwrap_or_else(|p| p.into_inner()),
                Some(d) => {
                    self.cv
                        .wait_timeout(g, d)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
            };
            g.waiters -= 1;
        }
    }

    pub(crate) fn wait_all(&self, deadline: Deadline) -> bool {
        self.wait_until(deadline, |g| g.done == g.items.len()).0
    }

    /// Take every result in order (call after `wait_all`).
    pub(crate) fn take_all(&self) -> Vec<Result<R>> {
        let mut g = self.lock();
        g.items
            .iter_mut()
            .map(|s| s.take().unwrap_or(Err(Error::AlreadyTaken)))
            .collect()
    }
}

/// Handle to one submitted task (Python's `AsyncResult`).
pub struct AsyncResult<R> {
    pub(crate) slots: Arc<Slots<R>>,
}

impl<R> std::fmt::Debug for AsyncResult<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncResult")
            .field("ready", &self.ready())
            .finish()
    }
}

impl<R> AsyncResult<R> {
    /// Whether the task has finished (successfully or not).
    pub fn ready(&self) -> bool {
        self.slots.lock().done == 1
    }

    /// Whether it finished without error; [`Error::NotReady`] before it finishes.
    pub fn successful(&self) -> Result<bool> {
        let g = self.slots.lock();
        if g.done == 0 {
            return Err(Error::NotReady);
        }
        Ok(g.ok[0])
    }

    /// Block until the task finishes.
    pub fn wait(&self) {
        self.slots.wait_all(Deadline::never());
    }

    /// Block at most `timeout`; true if the task finished.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        self.slots.wait_all(Deadline::after(Some(timeout)))
    }

    /// Wait for and take the result.
    pub fn get(self) -> Result<R> {
        self.take(Deadline::never())
    }

    /// Wait at most `timeout` for the result; [`Error::Timeout`] leaves it
    /// in place for a later call. After a successful take further calls
    /// return [`Error::AlreadyTaken`].
    pub fn get_timeout(&self, timeout: Duration) -> Result<R> {
        self.take(Deadline::after(Some(timeout)))
    }

    fn take(&self, deadline: Deadline) -> Result<R> {
        let (ok, mut g) = self.slots.wait_until(deadline, |g| g.done == 1);
        if !ok {
            return Err(Error::Timeout);
        }
        g.items[0].take().unwrap_or(Err(Error::AlreadyTaken))
    }
}

/// Ordered iterator over `imap` results. `next` blocks;
/// [`next_timeout`](IMapIter::next_timeout) is bounded.
pub struct IMapIter<R> {
    pub(crate) slots: Arc<Slots<R>>,
    pub(crate) pos: usize,
    pub(crate) len: usize,
    pub(crate) _keep: Option<Box<dyn std::any::Any + Send>>,
}

/// Python's check for `imap` and `imap_unordered`.
pub(crate) fn check_imap_chunksize(chunksize: usize) -> Result<()> {
    if chunksize < 1 {
        return Err(Error::InvalidArgument("Chunksize must be 1+".into()));
    }
    Ok(())
}

impl<R> IMapIter<R> {
    pub(crate) fn new(slots: Arc<Slots<R>>, len: usize) -> Self {
        IMapIter {
            slots,
            pos: 0,
            len,
            _keep: None,
        }
    }

    /// The next result in order, waiting at most `timeout`. On timeout
    /// returns `Some(Err(Error::Timeout))` and does not consume the item
    /// (Python's `next(timeout)` raising `TimeoutError`). A failed item
    /// yields its error at its position; iteration then continues.
    pub fn next_timeout(&mut self, timeout: Duration) -> Option<Result<R>> {
        self.next_deadline(Deadline::after(Some(timeout)))
    }

    fn next_deadline(&mut self, deadline: Deadline) -> Option<Result<R>> {
        if self.pos >= self.len {
            return None;
        }
        let i = self.pos;
        let (ok, mut g) = self.slots.wait_until(deadline, |g| g.filled[i]);
        if !ok {
            return Some(Err(Error::Timeout));
        }
        self.pos += 1;
        Some(g.items[i].take().unwrap_or(Err(Error::AlreadyTaken)))
    }
}

impl<R> Iterator for IMapIter<R> {
    type Item = Result<R>;
    fn next(&mut self) -> Option<Result<R>> {
        self.next_deadline(Deadline::never())
    }
}

/// Iterator over `imap_unordered` results in completion order.
pub struct IMapUnorderedIter<R> {
    pub(crate) slots: Arc<Slots<R>>,
    pub(crate) taken: usize,
    pub(crate) len: usize,
    pub(crate) _keep: Option<Box<dyn std::any::Any + Send>>,
}

impl<R> IMapUnorderedIter<R> {
    pub(crate) fn new(slots: Arc<Slots<R>>, len: usize) -> Self {
        IMapUnorderedIter {
            slots,
            taken: 0,
            len,
            _keep: None,
        }
    }
    /// The next finished result, waiting at most `timeout`
    /// (`Some(Err(Error::Timeout))` on timeout, nothing consumed).
    pub fn next_timeout(&mut self, timeout: Duration) -> Option<Result<R>> {
        self.next_deadline(Deadline::after(Some(timeout)))
    }

    fn next_deadline(&mut self, deadline: Deadline) -> Option<Result<R>> {
        if self.taken >= self.len {
            return None;
        }
        let (ok, mut g) = self.slots.wait_until(deadline, |g| !g.order.is_empty());
        if !ok {
            return Some(Err(Error::Timeout));
        }
        let i = g.order.pop_front()?;
        self.taken += 1;
        Some(g.items[i].take().unwrap_or(Err(Error::AlreadyTaken)))
    }
}

impl<R> Iterator for IMapUnorderedIter<R> {
    type Item = Result<R>;
    fn next(&mut self) -> Option<Result<R>> {
        self.next_deadline(Deadline::never())
    }
}

/// Python's default chunk size: `ceil(len / (4 * workers))`.
pub(crate) fn default_chunksize(len: usize, workers: usize) -> usize {
    if len == 0 {
        1
    } else {
        len.div_ceil(4 * workers.max(1)).max(1)
    }
}

/// First error (in input order) or all values.
pub(crate) fn collect_map<R>(v: Vec<Result<R>>) -> Result<Vec<R>> {
    v.into_iter().collect()
}

/// Per-chunk results of a process-pool `map`: each chunk is decoded straight
/// into a `Vec<R>` (or its first error), so there is no per-item slot,
/// lock or wake-up; [`take_map`](ChunkResults::take_map) concatenates them.
pub(crate) struct ChunkResults<R> {
    inner: Mutex<ChunkInner<R>>,
    cv: Condvar,
}

struct ChunkInner<R> {
    chunks: Vec<Option<Result<Vec<R>>>>,
    done: usize,
    waiters: usize,
}

impl<R> ChunkResults<R> {
    pub(crate) fn new(nchunks: usize) -> Arc<Self> {
        Arc::new(ChunkResults {
            inner: Mutex::new(ChunkInner {
                chunks: (0..nchunks).map(|_| None).collect(),
                done: 0,
                waiters: 0,
            }),
            cv: Condvar::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, ChunkInner<R>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Fill chunk `c` (first write wins).
    pub(crate) fn set(&self, c: usize, r: Result<Vec<R>>) {
        let mut g = self.lock();
        if c >= g.chunks.len() || g.chunks[c].is_some() {
            return;
        }
        g.chunks[c] = Some(r);
        g.done += 1;
        let wake = g.waiters > 0 && g.done == g.chunks.len();
        drop(g);
        if wake {
            self.cv.notify_all();
        }
    }

    /// Wait until every chunk is filled; false on timeout.
    pub(crate) fn wait_all(&self, deadline: Deadline) -> bool {
        let mut g = self.lock();
        loop {
            if g.done == g.chunks.len() {
                return true;
            }
            let rem = deadline.remaining();
            if rem.is_some_and(|d| d.is_zero()) {
                return false;
            }
            g.waiters += 1;
            g = match rem {
                None => self.cv.wait(g).unwrap_or_else(|p| p.into_inner()),
                Some(d) => {
                    self.cv
                        .wait_timeout(g, d)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
            };
            g.waiters -= 1;
        }
    }

    /// The first error in chunk order, or all values in order (call after
    /// `wait_all`).
    pub(crate) fn take_map(&self, len: usize) -> Result<Vec<R>> {
        let chunks: Vec<Option<Result<Vec<R>>>> = std::mem::take(&mut self.lock().chunks);
        if chunks.len() == 1 {
            if let Some(r) = chunks.into_iter().next().flatten() {
                return r;
            }
            return Err(Error::AlreadyTaken);
        }
        let mut out = Vec::with_capacity(len);
        for c in chunks {
            match c {
                Some(Ok(mut v)) => out.append(&mut v),
                Some(Err(e)) => return Err(e),
                None => return Err(Error::AlreadyTaken),
            }
        }
        Ok(out)
    }
}
