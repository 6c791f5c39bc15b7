//! `ThreadPool`: the [`crate::Pool`] API on threads
//! (Python's `multiprocessing.pool.ThreadPool`).
//!
//! Tasks may be closures (`Fn(A) -> R + Send + Sync`), so `fn` items work
//! with both pools. A panicking task yields [`Error::Remote`] with kind
//! `"panic"`; the thread survives. `terminate` cancels queued tasks (they
//! fail with [`Error::Terminated`]); a task already running on a thread
//! cannot be killed and finishes on its own.

use crate::error::{panic_message, Error, RemoteError, Result};
use crate::result::{
    check_imap_chunksize, collect_map, default_chunksize, AsyncResult, IMapIter, IMapUnorderedIter,
    Slots,
};
use crate::sys::Deadline;
use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// A queued unit of work; called with `true` to cancel it.
type Task = Box<dyn FnOnce(bool) + Send>;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Run {
    Running,
    Closed,
    Terminated,
}

struct St {
    run: Run,
    queue: VecDeque<Task>,
    live: usize,
}

struct Shared {
    st: Mutex<St>,
    cv: Condvar,
    maxtasks: Option<usize>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, St> {
        self.st.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A pool of threads with the same API as [`crate::Pool`].
pub struct ThreadPool {
    shared: Arc<Shared>,
    size: usize,
}

impl std::fmt::Debug for ThreadPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThreadPool")
            .field("threads", &self.size)
            .finish()
    }
}

fn caught<R>(f: impl FnOnce() -> R) -> Result<R> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|p| {
        Error::Remote(Box::new(RemoteError {
            kind: "panic".into(),
            message: panic_message(&*p),
            backtrace: String::new(),
            pid: 0,
        }))
    })
}

impl ThreadPool {
    /// One thread per CPU.
    pub fn new() -> Result<ThreadPool> {
        Self::build(crate::cpu_count(), None)
    }

    /// `n` threads (`n < 1` is an error).
    pub fn with_threads(n: usize) -> Result<ThreadPool> {
        Self::build(n, None)
    }

    /// `n` threads, each replaced after `maxtasks` tasks.
    pub fn with_maxtasksperchild(n: usize, maxtasks: usize) -> Result<ThreadPool> {
        if maxtasks == 0 {
            return Err(Error::InvalidArgument(
                "maxtasksperchild must be a positive integer".into(),
            ));
        }
        Self::build(n, Some(maxtasks))
    }

    fn build(n: usize, maxtasks: Option<usize>) -> Result<ThreadPool> {
        if n < 1 {
            return Err(Error::InvalidArgument(
                "Number of processes must be at least 1".into(),
            ));
        }
        let shared = Arc::new(Shared {
            st: Mutex::new(St {
                run: Run::Running,
                queue: VecDeque::new(),
                live: 0,
            }),
            cv: Condvar::new(),
            maxtasks,
        });
        for _ in 0..n {
            start_thread(&shared)?;
        }
        Ok(ThreadPool { shared, size: n })
    }

    /// Number of threads.
    pub fn processes(&self) -> usize {
        self.size
    }

    fn submit(&self, tasks: Vec<Task>) -> Result<()> {
        let mut st = self.shared.lock();
        if st.run != Run::Running {
            return Err(Error::PoolNotRunning);
        }
        let n = tasks.len();
        st.queue.extend(tasks);
        drop(st);
        if n == 1 {
            self.shared.cv.notify_one();
        } else {
            self.shared.cv.notify_all();
        }
        Ok(())
    }

    fn submit_chunks<A, R, F>(&self, f: F, items: Vec<A>, chunksize: usize) -> Result<Arc<Slots<R>>>
    where
        A: Send + 'static,
        R: Send + 'static,
        F: Fn(A) -> R + Send + Sync + 'static,
    {
        let slots = Slots::new(items.len());
        let f = Arc::new(f);
        let mut tasks: Vec<Task> = Vec::new();
        let mut it = items.into_iter().enumerate().peekable();
        while it.peek().is_some() {
            let chunk: Vec<(usize, A)> = it.by_ref().take(chunksize.max(1)).collect();
            let f = Arc::clone(&f);
            let slots = Arc::clone(&slots);
            tasks.push(Box::new(move |cancel| {
                for (i, a) in chunk {
                    let r = if cancel {
                        Err(Error::Terminated)
                    } else {
                        caught(|| f(a))
                    };
                    slots.set(i, r);
                }
            }));
        }
        self.submit(tasks)?;
        Ok(slots)
    }

    /// Run `f(args)` on a thread; returns a handle to its result.
    pub fn apply_async<A, R, F>(&self, f: F, args: A) -> Result<AsyncResult<R>>
    where
        A: Send + 'static,
        R: Send + 'static,
        F: Fn(A) -> R + Send + Sync + 'static,
    {
        Ok(AsyncResult {
            slots: self.submit_chunks(f, vec![args], 1)?,
        })
    }

    /// Like `apply_async`, calling `callback` with the result when it arrives.
    pub fn apply_async_with_callback<A, R, F>(
        &self,
        f: F,
        args: A,
        callback: impl FnOnce(&Result<R>) + Send + 'static,
    ) -> Result<AsyncResult<R>>
    where
        A: Send + 'static,
        R: Send + 'static,
        F: Fn(A) -> R + Send + Sync + 'static,
    {
        let slots = Slots::new(1);
        slots.set_callback(Box::new(callback));
        let s2 = Arc::clone(&slots);
        self.submit(vec![Box::new(move |cancel| {
            let r = if cancel {
                Err(Error::Terminated)
            } else {
                caught(|| f(args))
            };
            s2.set(0, r);
        })])?;
        Ok(AsyncResult { slots })
    }

    /// Run `f(args)` and wait for the result.
    pub fn apply<A, R, F>(&self, f: F, args: A) -> Result<R>
    where
        A: Send + 'static,
        R: Send + 'static,
        F: Fn(A) -> R + Send + Sync + 'static,
    {
        self.apply_async(f, args)?.get()
    }

    /// Ordered map (see [`crate::Pool::map`]).
    pub fn map<A, R, F>(
        &self,
        f: F,
        items: impl IntoIterator<Item = A>,
        chunksize: Option<usize>,
    ) -> Result<Vec<R>>
    where
        A: Send + 'static,
        R: Send + 'static,
        F: Fn(A) -> R + Send + Sync + 'static,
    {
        self.map_deadline(f, items, chunksize, Deadline::never())
    }

    /// `map` bounded by `timeout`.
    pub fn map_timeout<A, R, F>(
        &self,
        f: F,
        items: impl IntoIterator<Item = A>,
        chunksize: Option<usize>,
        timeout: Duration,
    ) -> Result<Vec<R>>
    where
        A: Send + 'static,
        R: Send + 'static,
        F: Fn(A) -> R + Send + Sync + 'static,
    {
        self.map_deadline(f, items, chunksize, Deadline::after(Some(timeout)))
    }

    fn map_deadline<A, R, F>(
        &self,
        f: F,
        items: impl IntoIterator<Item = A>,
        chunksize: Option<usize>,
        d: Deadline,
    ) -> Result<Vec<R>>
    where
        A: Send + 'static,
        R: Send + 'static,
        F: Fn(A) -> R + Send + Sync + 'static,
    {
        let items: Vec<A> = items.into_iter().collect();
        let cs = match chunksize {
            Some(0) => {
                return Err(Error::InvalidArgument(
                    "chunksize must be at least 1".into(),
                ))
            }
            Some(c) => c,
            None => default_chunksize(items.len(), self.size),
        };
        let slots = self.submit_chunks(f, items, cs)?;
        if !slots.wait_all(d) {
            return Err(Error::Timeout);
        }
        collect_map(slots.take_all())
    }

    /// Ordered lazy results.
    pub fn imap<A, R, F>(
        &self,
        f: F,
        items: impl IntoIterator<Item = A>,
        chunksize: usize,
    ) -> Result<IMapIter<R>>
    where
        A: Send + 'static,
        R: Send + 'static,
        F: Fn(A) -> R + Send + Sync + 'static,
    {
        check_imap_chunksize(chunksize)?;
        let items: Vec<A> = items.into_iter().collect();
        let len = items.len();
        Ok(IMapIter::new(self.submit_chunks(f, items, chunksize)?, len))
    }

    /// Results in completion order.
    pub fn imap_unordered<A, R, F>(
        &self,
        f: F,
        items: impl IntoIterator<Item = A>,
        chunksize: usize,
    ) -> Result<IMapUnorderedIter<R>>
    where
        A: Send + 'static,
        R: Send + 'static,
        F: Fn(A) -> R + Send + Sync + 'static,
    {
        check_imap_chunksize(chunksize)?;
        let items: Vec<A> = items.into_iter().collect();
        let len = items.len();
        Ok(IMapUnorderedIter::new(
            self.submit_chunks(f, items, chunksize)?,
            len,
        ))
    }

    /// Stop accepting tasks; threads exit once the queue is drained.
    pub fn close(&self) {
        let mut st = self.shared.lock();
        if st.run == Run::Running {
            st.run = Run::Closed;
        }
        drop(st);
        self.shared.cv.notify_all();
    }

    /// Cancel queued tasks ([`Error::Terminated`]) and stop the threads
    /// after their current task.
    pub fn terminate(&self) {
        let mut st = self.shared.lock();
        st.run = Run::Terminated;
        let pending: Vec<Task> = st.queue.drain(..).collect();
        drop(st);
        self.shared.cv.notify_all();
        for t in pending {
            t(true);
        }
    }

    /// Wait for the threads to exit; [`Error::PoolRunning`] before `close`/`terminate`.
    pub fn join(&self) -> Result<()> {
        self.join_deadline(Deadline::never())
    }

    /// `join` bounded by `timeout`.
    pub fn join_timeout(&self, timeout: Duration) -> Result<()> {
        self.join_deadline(Deadline::after(Some(timeout)))
    }

    fn join_deadline(&self, d: Deadline) -> Result<()> {
        let mut st = self.shared.lock();
        if st.run == Run::Running {
            return Err(Error::PoolRunning);
        }
        while st.live > 0 {
            st = match d.remaining() {
                None => self.shared.cv.wait(st).unwrap_or_else(|p| p.into_inner()),
                Some(r) if r.is_zero() => return Err(Error::Timeout),
                Some(r) => {
                    self.shared
                        .cv
                        .wait_timeout(st, r)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
            };
        }
        Ok(())
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        self.terminate();
    }
}

fn start_thread(shared: &Arc<Shared>) -> Result<()> {
    shared.lock().live += 1;
    let s = Arc::clone(shared);
    let r = std::thread::Builder::new()
        .name("spindle-threadpool".into())
        .spawn(move || thread_main(s));
    if let Err(e) = r {
        shared.lock().live -= 1;
        return Err(e.into());
    }
    Ok(())
}

fn thread_main(shared: Arc<Shared>) {
    let mut done = 0usize;
    loop {
        let task = {
            let mut st = shared.lock();
            loop {
                if st.run == Run::Terminated {
                    break None;
                }
                if let Some(t) = st.queue.pop_front() {
                    break Some(t);
                }
                if st.run == Run::Closed {
                    break None;
                }
                st = shared.cv.wait(st).unwrap_or_else(|p| p.into_inner());
            }
        };
        let Some(task) = task else { break };
        task(false);
        done += 1;
        if shared.maxtasks.is_some_and(|m| done >= m) && shared.lock().run != Run::Terminated {
            // Replace this thread (maxtasksperchild); on failure keep serving.
            if start_thread(&shared).is_ok() {
                break;
            }
        }
    }
    shared.lock().live -= 1;
    shared.cv.notify_all();
}
