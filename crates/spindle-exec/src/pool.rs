//! The process pool: Python's `multiprocessing.Pool`, minus its hangs.
//!
//! Each worker has its own link (socketpair + shared mappings) and its own
//! supervisor thread in the parent, which takes a job from the shared queue,
//! sends it, and waits for the reply or for end-of-file. End-of-file means
//! the worker died: the supervisor reaps it (exit code or signal), fails the
//! job with [`Error::WorkerLost`] (or requeues it if retries are configured),
//! starts a replacement, and carries on. There is no shared, lockable inqueue
//! a dying worker could leave locked (gh-96062), and no task can be lost
//! silently (bpo-22393).

use crate::error::Exit;
use crate::error::{Error, RemoteError, Result};
use crate::result::{
    check_imap_chunksize, default_chunksize, AsyncResult, ChunkResults, IMapIter,
    IMapUnorderedIter, Slots,
};
use crate::sys::Deadline;
use crate::wire::{
    self, Header, K_ACK, K_ERROR, K_INIT, K_PING, K_PONG, K_RESULT, K_SHUTDOWN, K_TASK,
};
use crate::worker::{self, PoolTramp, ProcTramp, Worker};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::VecDeque;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

type InitEncoder = Arc<dyn Fn() -> Result<(Vec<u8>, Vec<RawFd>)> + Send + Sync>;

struct Init {
    tramp: i64,
    func: i64,
    encode: InitEncoder,
}

pub(crate) trait Sink: Send + Sync {
    /// A `K_RESULT` body: `Vec<R>` if `plain`, else `Vec<Result<R, RemoteError>>`.
    fn ok(&self, chunk: usize, plain: bool, body: &[u8]);
    fn err(&self, chunk: usize, e: Error);
}

struct ChunkSink<R> {
    slots: Arc<Slots<R>>,
    chunks: Vec<(usize, usize)>,
}

impl<R: DeserializeOwned + Send> Sink for ChunkSink<R> {
    fn ok(&self, chunk: usize, plain: bool, body: &[u8]) {
        let Some(&(start, len)) = self.chunks.get(chunk) else {
            return;
        };
        if plain {
            match wire::decode::<Vec<R>>(body) {
                Ok(v) if v.len() == len => self.slots.set_batch(start, v.into_iter().map(Ok)),
                Ok(v) => self.err(
                    chunk,
                    Error::Protocol(format!("expected {len} results, got {}", v.len())),
                ),
                Err(e) => self.err(chunk, e),
            }
            return;
        }
        match wire::decode::<Vec<std::result::Result<R, Box<RemoteError>>>>(body) {
            Ok(v) if v.len() == len => {
                self.slots
                    .set_batch(start, v.into_iter().map(|r| r.map_err(Error::Remote)));
            }
            Ok(v) => self.err(
                chunk,
                Error::Protocol(format!("expected {len} results, got {}", v.len())),
            ),
            Err(e) => self.err(chunk, e),
        }
    }
    fn err(&self, chunk: usize, e: Error) {
        let Some(&(start, len)) = self.chunks.get(chunk) else {
            return;
        };
        self.slots
            .set_batch(start, (0..len).map(|_| Err(e.clone())));
    }
}

/// Sink of a `map`: each chunk decoded into one `Vec<R>` (or its first error).
struct MapSink<R> {
    results: Arc<ChunkResults<R>>,
    lens: Vec<usize>,
}

impl<R: DeserializeOwned + Send> Sink for MapSink<R> {
    fn ok(&self, chunk: usize, plain: bool, body: &[u8]) {
        let Some(&len) = self.lens.get(chunk) else {
            return;
        };
        let r = if plain {
            wire::decode::<Vec<R>>(body)
        } else {
            wire::decode::<Vec<std::result::Result<R, Box<RemoteError>>>>(body).and_then(|v| {
                // The first error of the chunk in input order, else the values.
                v.into_iter()
                    .collect::<std::result::Result<Vec<R>, _>>()
                    .map_err(Error::Remote)
            })
        };
        let r = match r {
            Ok(v) if v.len() != len => Err(Error::Protocol(format!(
                "expected {len} results, got {}",
                v.len()
            ))),
            r => r,
        };
        self.results.set(chunk, r);
    }
    fn err(&self, chunk: usize, e: Error) {
        self.results.set(chunk, Err(e));
    }
}

struct Job {
    tramp: i64,
    func: i64,
    /// Shared so a submitter can write it after unlocking (see `submit`).
    payload: Arc<Vec<u8>>,
    sink: Arc<dyn Sink>,
    chunk: usize,
    attempts: u32,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Run {
    Running,
    Closed,
    Terminated,
}

struct St {
    run: Run,
    queue: VecDeque<Job>,
    pids: Vec<Option<u32>>,
    live: usize,
    /// Supervisors parked waiting for a job (most recent last), each with
    /// its worker's socket if it has a worker. A parked supervisor's worker
    /// is idle: it has answered everything sent to it, so its socket is
    /// empty and nobody else writes to it.
    idle: Vec<(usize, Option<Arc<OwnedFd>>)>,
    /// Per supervisor: a job a submitter already wrote to that supervisor's
    /// idle worker, with the result of that write. Only ever set for a
    /// supervisor taken off `idle`, which picks it up before anything else.
    direct: Vec<Option<(Job, Result<()>)>>,
}

impl St {
    /// Wake one parked supervisor, if any: one parked in `recv` on its
    /// worker's socket is sent a `K_PING` for its worker to echo; for one
    /// parked on its condvar the index is returned, to notify after
    /// unlocking.
    fn wake_one(&mut self) -> Option<usize> {
        let (i, fd) = self.idle.pop()?;
        match fd {
            Some(fd) => {
                // If the worker is dead this fails, and end-of-file wakes
                // the supervisor instead.
                let _ = wire::send_inline(fd.as_raw_fd(), K_PING, 0, 0, &[]);
                None
            }
            None => Some(i),
        }
    }

    /// Wake every parked supervisor; the condvar-parked ones to notify.
    fn wake_all(&mut self) -> Vec<usize> {
        let mut v = Vec::new();
        while !self.idle.is_empty() {
            v.extend(self.wake_one());
        }
        v
    }
}

struct Shared {
    st: Mutex<St>,
    /// One per supervisor, so a submitter wakes exactly the one it gave a
    /// job to (all wait with `st`).
    wake: Vec<Condvar>,
    done_cv: Condvar,
    maxtasks: Option<usize>,
    retries: u32,
    init: Option<Init>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, St> {
        self.st.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Notify the condvars of `idx` (after unlocking).
    fn notify(&self, idx: impl IntoIterator<Item = usize>) {
        for i in idx {
            self.wake[i].notify_one();
        }
    }

    /// Queue `job` at the front (a retry) and wake a parked supervisor.
    fn requeue_front(&self, mut st: MutexGuard<'_, St>, job: Job) {
        st.queue.push_front(job);
        let w = st.wake_one();
        drop(st);
        self.notify(w);
    }
}

/// Configures a [`Pool`].
#[derive(Default)]
pub struct PoolBuilder {
    processes: Option<usize>,
    maxtasks: Option<usize>,
    retries: u32,
    init: Option<Init>,
}

impl PoolBuilder {
    /// Number of worker processes (default: [`crate::cpu_count`]).
    pub fn processes(mut self, n: usize) -> Self {
        self.processes = Some(n);
        self
    }

    /// Replace a worker after it has run this many tasks (chunks).
    pub fn maxtasksperchild(mut self, n: usize) -> Self {
        self.maxtasks = Some(n);
        self
    }

    /// Re-run a task whose worker died up to `n` more times before failing
    /// it with [`Error::WorkerLost`]. Only use for idempotent tasks.
    pub fn retries(mut self, n: u32) -> Self {
        self.retries = n;
        self
    }

    /// Run `f(args)` in each worker when it starts. `args` may contain
    /// handles (Queue, Lock, ...), which the workers inherit.
    pub fn initializer<A>(mut self, f: fn(A), args: A) -> Self
    where
        A: Serialize + DeserializeOwned + Send + 'static,
    {
        let args = Mutex::new(args);
        self.init = Some(Init {
            tramp: worker::fn_offset(worker::proc_tramp::<A> as ProcTramp as usize),
            func: worker::fn_offset(f as usize),
            encode: Arc::new(move || {
                let a = args.lock().unwrap_or_else(|p| p.into_inner());
                wire::encode_sharing(&*a)
            }),
        });
        self
    }

    /// Start the pool.
    pub fn build(self) -> Result<Pool> {
        let n = self.processes.unwrap_or_else(crate::cpu_count);
        if n < 1 {
            return Err(Error::InvalidArgument(
                "Number of processes must be at least 1".into(),
            ));
        }
        if self.maxtasks == Some(0) {
            return Err(Error::InvalidArgument(
                "maxtasksperchild must be a positive integer".into(),
            ));
        }
        let shared = Arc::new(Shared {
            st: Mutex::new(St {
                run: Run::Running,
                queue: VecDeque::new(),
                pids: vec![None; n],
                live: n,
                idle: Vec::with_capacity(n),
                direct: (0..n).map(|_| None).collect(),
            }),
            wake: (0..n).map(|_| Condvar::new()).collect(),
            done_cv: Condvar::new(),
            maxtasks: self.maxtasks,
            retries: self.retries,
            init: self.init,
        });
        let mut handlers = Vec::with_capacity(n);
        for i in 0..n {
            let s = Arc::clone(&shared);
            let h = std::thread::Builder::new()
                .name(format!("spindle-pool-{i}"))
                .spawn(move || supervise(s, i));
            match h {
                Ok(h) => handlers.push(h),
                Err(e) => {
                    shared.lock().live -= n - i;
                    let pool = Pool {
                        shared,
                        handlers: Mutex::new(handlers),
                        size: n,
                    };
                    pool.terminate();
                    return Err(e.into());
                }
            }
        }
        Ok(Pool {
            shared,
            handlers: Mutex::new(handlers),
            size: n,
        })
    }
}

/// A pool of worker processes (Python's `multiprocessing.Pool`).
///
/// Task functions are `fn` items or non-capturing closures (`fn(A) -> R`);
/// arguments and results are serialized with serde (the crate's postcard-like
/// format, `codec.rs`). Dropping the
/// pool terminates it (like leaving `with Pool() as p:`).
pub struct Pool {
    shared: Arc<Shared>,
    handlers: Mutex<Vec<std::thread::JoinHandle<()>>>,
    size: usize,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("processes", &self.size)
            .finish()
    }
}

impl Pool {
    /// A pool with one worker per CPU.
    pub fn new() -> Result<Pool> {
        PoolBuilder::default().build()
    }

    /// A pool with `n` workers (`n < 1` is an error).
    pub fn with_processes(n: usize) -> Result<Pool> {
        PoolBuilder::default().processes(n).build()
    }

    /// A builder for the other options.
    pub fn builder() -> PoolBuilder {
        PoolBuilder::default()
    }

    /// Number of workers.
    pub fn processes(&self) -> usize {
        self.size
    }

    /// Pids of the currently running workers.
    pub fn pids(&self) -> Vec<u32> {
        self.shared.lock().pids.iter().flatten().copied().collect()
    }

    /// Queue `jobs`. A job with an inline-sized body that finds a worker
    /// idle is written to that worker's socket by the submitter itself, and
    /// its supervisor is handed the job in flight: the worker starts at
    /// once, instead of after the supervisor thread has woken up to send it
    /// (one thread wake-up fewer on the round trip of an `apply`).
    fn submit(&self, jobs: impl IntoIterator<Item = Job>) -> Result<()> {
        let mut st = self.shared.lock();
        if st.run != Run::Running {
            return Err(Error::PoolNotRunning);
        }
        let mut wake: Vec<usize> = Vec::new();
        let mut sends = Vec::new();
        for job in jobs {
            if job.payload.len() <= wire::SHM_THRESHOLD {
                if let Some(k) = st.idle.iter().rposition(|e| e.1.is_some()) {
                    let (i, fd) = st.idle.remove(k);
                    sends.push((fd, Arc::clone(&job.payload), job.tramp, job.func));
                    // The supervisor, parked reading the socket, wakes on
                    // the reply and finds the job here.
                    st.direct[i] = Some((job, Ok(())));
                    continue;
                }
            }
            st.queue.push_back(job);
            wake.extend(st.wake_one());
        }
        drop(st);
        // Written after unlocking (a send wakes the worker, which may run
        // at once on this CPU; holding the pool lock then would stall its
        // supervisor). Nobody else writes to these sockets meanwhile: the
        // supervisors are off `idle` and write only after reading the
        // reply (or end-of-file), and the `Arc`s keep the fds open. Each
        // worker has read everything sent before, so a frame of at most
        // 64 KiB fits the empty socket buffer. If a worker is dead the
        // write fails (`EPIPE`), which needs no handling here: its
        // supervisor reads end-of-file and fails or retries the job.
        for (fd, payload, tramp, func) in sends {
            if let Some(fd) = fd {
                let _ = wire::send_inline(fd.as_raw_fd(), K_TASK, tramp, func, &payload);
            }
        }
        self.shared.notify(wake);
        Ok(())
    }

    /// Encode `items` in chunks of `chunksize` and submit each batch of
    /// chunks as soon as it is encoded, so workers start on the first
    /// chunks while later ones are still being encoded. If an item cannot
    /// be serialized, the chunks from there on fail with that error and it
    /// is returned (chunks before it were already submitted and run, as in
    /// Python, whose task handler pickles as it goes).
    fn submit_encoding<A, R>(
        &self,
        f: fn(A) -> R,
        items: &[A],
        chunksize: usize,
        sink: &Arc<dyn Sink>,
    ) -> Result<()>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let tramp = worker::fn_offset(worker::pool_tramp::<A, R> as PoolTramp as usize);
        let func = worker::fn_offset(f as usize);
        let cs = chunksize.max(1);
        let mut batch: Vec<Job> = Vec::new();
        let mut batch_bytes = 0usize;
        let mut hint = 0usize;
        for (chunk, c) in items.chunks(cs).enumerate() {
            let payload = match wire::encode_with_capacity(c, hint) {
                Ok(p) => Arc::new(p),
                Err(e) => {
                    // Submit what is encoded, fail the rest.
                    let _ = self.submit(std::mem::take(&mut batch));
                    for k in chunk..items.len().div_ceil(cs) {
                        sink.err(k, e.clone());
                    }
                    return Err(e);
                }
            };
            hint = payload.len();
            batch_bytes += payload.len();
            batch.push(Job {
                tramp,
                func,
                payload,
                sink: Arc::clone(sink),
                chunk,
                attempts: 0,
            });
            // The first chunk at once (a worker may be idle), then in
            // batches, so a chunksize of 1 does not lock per item.
            if chunk == 0 || batch.len() >= 256 || batch_bytes >= 4 * wire::SHM_THRESHOLD {
                self.submit(std::mem::take(&mut batch))?;
                batch_bytes = 0;
            }
        }
        if !batch.is_empty() {
            self.submit(batch)?;
        }
        Ok(())
    }

    fn submit_chunks<A, R>(
        &self,
        f: fn(A) -> R,
        items: Vec<A>,
        chunksize: usize,
    ) -> Result<Arc<Slots<R>>>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let n = items.len();
        let slots = Slots::new(n);
        let sink: Arc<dyn Sink> = Arc::new(ChunkSink {
            slots: Arc::clone(&slots),
            chunks: chunk_bounds(n, chunksize),
        });
        self.submit_encoding(f, &items, chunksize, &sink)?;
        Ok(slots)
    }

    /// Run `f(args)` in a worker; returns a handle to its result.
    pub fn apply_async<A, R>(&self, f: fn(A) -> R, args: A) -> Result<AsyncResult<R>>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        Ok(AsyncResult {
            slots: self.submit_chunks(f, vec![args], 1)?,
        })
    }

    /// Like [`apply_async`](Pool::apply_async) with a callback called (in a
    /// pool thread) with the result when it arrives (`callback` and
    /// `error_callback` in one).
    pub fn apply_async_with_callback<A, R>(
        &self,
        f: fn(A) -> R,
        args: A,
        callback: impl FnOnce(&Result<R>) + Send + 'static,
    ) -> Result<AsyncResult<R>>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let n = 1;
        let slots = Slots::new(n);
        slots.set_callback(Box::new(callback));
        let payload = Arc::new(wire::encode(&[args][..])?);
        let sink: Arc<dyn Sink> = Arc::new(ChunkSink {
            slots: Arc::clone(&slots),
            chunks: vec![(0, 1)],
        });
        let job = Job {
            tramp: worker::fn_offset(worker::pool_tramp::<A, R> as PoolTramp as usize),
            func: worker::fn_offset(f as usize),
            payload,
            sink,
            chunk: 0,
            attempts: 0,
        };
        self.submit([job])?;
        Ok(AsyncResult { slots })
    }

    /// Run `f(args)` and wait for the result.
    pub fn apply<A, R>(&self, f: fn(A) -> R, args: A) -> Result<R>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.apply_async(f, args)?.get()
    }

    /// Ordered map. `chunksize` `None` uses Python's default
    /// (`ceil(len / (4 * processes))`). All items run even if some fail; the
    /// first error in input order is returned (`test_map_no_failfast`).
    pub fn map<A, R>(
        &self,
        f: fn(A) -> R,
        items: impl IntoIterator<Item = A>,
        chunksize: Option<usize>,
    ) -> Result<Vec<R>>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.map_deadline(f, items, chunksize, Deadline::never())
    }

    /// [`map`](Pool::map) bounded by `timeout` ([`Error::Timeout`]).
    pub fn map_timeout<A, R>(
        &self,
        f: fn(A) -> R,
        items: impl IntoIterator<Item = A>,
        chunksize: Option<usize>,
        timeout: Duration,
    ) -> Result<Vec<R>>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.map_deadline(f, items, chunksize, Deadline::after(Some(timeout)))
    }

    fn map_deadline<A, R>(
        &self,
        f: fn(A) -> R,
        items: impl IntoIterator<Item = A>,
        chunksize: Option<usize>,
        d: Deadline,
    ) -> Result<Vec<R>>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
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
        let n = items.len();
        let chunks = chunk_bounds(n, cs);
        let results = ChunkResults::new(chunks.len());
        let sink: Arc<dyn Sink> = Arc::new(MapSink {
            results: Arc::clone(&results),
            lens: chunks.iter().map(|c| c.1).collect(),
        });
        self.submit_encoding(f, &items, cs, &sink)?;
        drop(items);
        if !results.wait_all(d) {
            return Err(Error::Timeout);
        }
        results.take_map(n)
    }

    /// Ordered lazy results (chunksize ≥ 1; Python's default is 1).
    pub fn imap<A, R>(
        &self,
        f: fn(A) -> R,
        items: impl IntoIterator<Item = A>,
        chunksize: usize,
    ) -> Result<IMapIter<R>>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        check_imap_chunksize(chunksize)?;
        let items: Vec<A> = items.into_iter().collect();
        let len = items.len();
        Ok(IMapIter::new(self.submit_chunks(f, items, chunksize)?, len))
    }

    /// Results in completion order.
    pub fn imap_unordered<A, R>(
        &self,
        f: fn(A) -> R,
        items: impl IntoIterator<Item = A>,
        chunksize: usize,
    ) -> Result<IMapUnorderedIter<R>>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        check_imap_chunksize(chunksize)?;
        let items: Vec<A> = items.into_iter().collect();
        let len = items.len();
        Ok(IMapUnorderedIter::new(
            self.submit_chunks(f, items, chunksize)?,
            len,
        ))
    }

    /// Stop accepting tasks; workers exit once the queue is drained.
    pub fn close(&self) {
        let mut st = self.shared.lock();
        if st.run == Run::Running {
            st.run = Run::Closed;
        }
        let w = st.wake_all();
        drop(st);
        self.shared.notify(w);
    }

    /// Stop now: pending tasks fail with [`Error::Terminated`], workers are killed.
    pub fn terminate(&self) {
        let mut st = self.shared.lock();
        st.run = Run::Terminated;
        let pending: Vec<Job> = st.queue.drain(..).collect();
        for pid in st.pids.iter().flatten() {
            // Not yet reaped (the supervisor clears the slot before reaping).
            let _ = crate::sys::kill(*pid, libc::SIGKILL);
        }
        let w = st.wake_all();
        drop(st);
        self.shared.notify(w);
        for j in pending {
            j.sink.err(j.chunk, Error::Terminated);
        }
    }

    /// Wait for the workers to exit; [`Error::PoolRunning`] before
    /// `close`/`terminate`.
    pub fn join(&self) -> Result<()> {
        self.join_deadline(Deadline::never())
    }

    /// [`join`](Pool::join) bounded by `timeout` ([`Error::Timeout`]).
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
                None => self
                    .shared
                    .done_cv
                    .wait(st)
                    .unwrap_or_else(|p| p.into_inner()),
                Some(r) if r.is_zero() => return Err(Error::Timeout),
                Some(r) => {
                    self.shared
                        .done_cv
                        .wait_timeout(st, r)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
            };
        }
        drop(st);
        let hs: Vec<_> = self
            .handlers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
            .collect();
        for h in hs {
            let _ = h.join();
        }
        Ok(())
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.terminate();
        let _ = self.join_timeout(Duration::from_secs(10));
    }
}

/// `(start, len)` of each chunk of `n` items in chunks of `chunksize`.
fn chunk_bounds(n: usize, chunksize: usize) -> Vec<(usize, usize)> {
    let cs = chunksize.max(1);
    (0..n)
        .step_by(cs)
        .map(|start| (start, cs.min(n - start)))
        .collect()
}

fn start_worker(shared: &Shared) -> Result<Worker> {
    let (init_body, fds) = match &shared.init {
        Some(i) => {
            let (b, f) = (i.encode)()?;
            (Some(b), f)
        }
        None => (None, Vec::new()),
    };
    let mut w = worker::spawn_worker("pool", &fds)?;
    if let (Some(init), Some(body)) = (&shared.init, init_body) {
        w.link.send_raw(K_INIT, init.tramp, init.func, &body)?;
        match w.link.recv(Deadline::never()) {
            Ok(h) if h.kind == K_ACK => {}
            _ => {
                let exit = w.reap(Duration::from_secs(1));
                return Err(Error::Protocol(format!(
                    "pool initializer failed in worker {}: {exit}",
                    w.pid
                )));
            }
        }
    }
    Ok(w)
}

/// What a supervisor does next.
enum Next {
    /// Send this job to the worker.
    Send(Job),
    /// This job was sent (pipelined by us, or written by a submitter while
    /// we were parked without reading), with the send's result.
    Sent(Job, Result<()>),
    /// A submitter sent this job to our parked worker, and the worker's
    /// answer (or end-of-file) has already been read.
    Answered(Job, Result<Header>),
    /// The parked worker died (or sent something unasked): no job of ours.
    IdleLost(Result<Header>),
    Stop,
}

/// Wait for the next thing to do. A supervisor with a worker parks by
/// blocking in `recv` on the worker's socket: whoever takes it off `idle`
/// writes one frame to the worker (a task, or a `K_PING` the worker echoes),
/// so the answer wakes it with no thread wake-up of its own in between; a
/// worker's death wakes it too (end-of-file). Without a worker it waits on
/// its condvar.
fn next_job(shared: &Shared, idx: usize, worker: &mut Option<Worker>) -> Next {
    let mut st = shared.lock();
    loop {
        // A job already written to our worker comes first, even after
        // terminate: its reply (or end-of-file) must be read before
        // anything else is written to the socket.
        if let Some((j, r)) = st.direct[idx].take() {
            return Next::Sent(j, r);
        }
        if st.run == Run::Terminated {
            return Next::Stop;
        }
        if let Some(j) = st.queue.pop_front() {
            return Next::Send(j);
        }
        if st.run == Run::Closed {
            return Next::Stop;
        }
        match worker.as_mut() {
            Some(w) => {
                st.idle.push((idx, Some(Arc::clone(&w.link.sock))));
                drop(st);
                if let Some(n) = wait_parked(shared, idx, w) {
                    return n;
                }
                st = shared.lock();
            }
            None => {
                st.idle.push((idx, None));
                st = shared.wake[idx].wait(st).unwrap_or_else(|p| p.into_inner());
                // Still listed if woken by terminate or spuriously.
                if let Some(k) = st.idle.iter().position(|e| e.0 == idx) {
                    st.idle.remove(k);
                }
            }
        }
    }
}

/// Wait, parked (listed in `idle` with our worker's socket), for the
/// worker's next frame; `None` if it was the `K_PONG` of a wake-up.
fn wait_parked(shared: &Shared, idx: usize, w: &mut Worker) -> Option<Next> {
    let h = w.link.recv(Deadline::never());
    let mut st = shared.lock();
    // Still listed only if nobody woke us (the worker died).
    if let Some(k) = st.idle.iter().position(|e| e.0 == idx) {
        st.idle.remove(k);
    }
    match (st.direct[idx].take(), h) {
        (Some((j, Err(e))), _) => Some(Next::Answered(j, Err(e))),
        (Some((j, Ok(()))), h) => Some(Next::Answered(j, h)),
        (None, Ok(h)) if h.kind == K_PONG => None,
        (None, h) => Some(Next::IdleLost(h)),
    }
}

/// Reap a worker that died or spoke nonsense (`res` is what we got from it).
fn lose_worker(shared: &Shared, idx: usize, mut w: Worker, res: &Result<Header>) -> (u32, Exit) {
    shared.lock().pids[idx] = None;
    if !matches!(res, Err(Error::Eof) | Err(Error::Io(_))) {
        let _ = w.child.kill();
    }
    let exit = w.reap(Duration::from_secs(2));
    (w.pid, exit)
}

fn supervise(shared: Arc<Shared>, idx: usize) {
    let mut worker: Option<Worker> = None;
    let mut tasks_done = 0usize;
    let mut spawn_failures = 0u32;
    // A job already sent to the worker while the previous reply was being
    // delivered (pipelining), with the result of that send.
    let mut presend: Option<(Job, Result<()>)> = None;
    // Whether we parked (listed ourselves in `idle`) before delivering the
    // previous reply.
    let mut parked = false;
    loop {
        let parked_next = match (std::mem::take(&mut parked), worker.as_mut()) {
            (true, Some(w)) => wait_parked(&shared, idx, w),
            _ => None,
        };
        let next = if let Some((j, r)) = presend.take() {
            Next::Sent(j, r)
        } else if let Some(n) = parked_next {
            n
        } else {
            // Keep a worker ready while the pool runs (Python starts them eagerly).
            if worker.is_none() && shared.lock().run == Run::Running {
                if spawn_failures > 0 {
                    std::thread::sleep(Duration::from_millis(
                        50 * u64::from(spawn_failures.min(20)),
                    ));
                }
                match start_worker(&shared) {
                    Ok(w) => {
                        let mut st = shared.lock();
                        if st.run == Run::Terminated {
                            drop(st);
                            let mut w = w;
                            let _ = w.child.kill();
                            w.reap(Duration::from_secs(1));
                            break;
                        }
                        st.pids[idx] = Some(w.pid);
                        worker = Some(w);
                        tasks_done = 0;
                        spawn_failures = 0;
                    }
                    Err(e) => {
                        spawn_failures += 1;
                        // Fail one queued job so callers see the cause instead of waiting.
                        let job = shared.lock().queue.pop_front();
                        if let Some(j) = job {
                            j.sink.err(j.chunk, e);
                        }
                        continue;
                    }
                }
            }
            next_job(&shared, idx, &mut worker)
        };
        let (mut job, res) = match next {
            Next::Stop => break,
            Next::IdleLost(res) => {
                if let Some(w) = worker.take() {
                    lose_worker(&shared, idx, w, &res);
                }
                continue;
            }
            Next::Answered(job, res) => (job, res),
            Next::Sent(job, sent) => {
                let Some(w) = worker.as_mut() else {
                    // Unreachable: only a worker is sent jobs.
                    job.sink.err(
                        job.chunk,
                        Error::Protocol("job sent without a worker".into()),
                    );
                    continue;
                };
                let res = sent.and_then(|_| w.link.recv(Deadline::never()));
                (job, res)
            }
            Next::Send(job) => {
                if worker.is_none() {
                    match start_worker(&shared) {
                        Ok(w) => {
                            shared.lock().pids[idx] = Some(w.pid);
                            worker = Some(w);
                            tasks_done = 0;
                        }
                        Err(e) => {
                            job.sink.err(job.chunk, e);
                            continue;
                        }
                    }
                }
                let Some(w) = worker.as_mut() else { continue };
                let res = w
                    .link
                    .send_raw(K_TASK, job.tramp, job.func, &job.payload)
                    .and_then(|_| w.link.recv(Deadline::never()));
                (job, res)
            }
        };
        let Some(w) = worker.as_mut() else { continue };
        match res {
            Ok(h) if h.kind == K_RESULT || h.kind == K_ERROR => {
                tasks_done += 1;
                let retiring = shared.maxtasks.is_some_and(|m| tasks_done >= m);
                // Pipelining: hand the worker its next job before decoding this
                // reply, so the worker computes while we decode. Only when the
                // reply body is our own copy (not in the worker's shared
                // mapping, which its next reply may overwrite); then at most
                // one message per direction is still outstanding. With no
                // job queued, park now, before delivering: a caller woken
                // by the delivery that submits again at once then finds
                // the worker idle (and writes to it itself), and we need
                // not lock again after delivering.
                if !retiring && !w.link.rx.body_is_shared() {
                    let mut st = shared.lock();
                    let next = match st.run {
                        Run::Terminated => None,
                        _ => st.queue.pop_front(),
                    };
                    if next.is_none() && st.run == Run::Running {
                        st.idle.push((idx, Some(Arc::clone(&w.link.sock))));
                        parked = true;
                    }
                    drop(st);
                    if let Some(next) = next {
                        let r = w
                            .link
                            .send_raw(K_TASK, next.tramp, next.func, &next.payload);
                        presend = Some((next, r));
                    }
                }
                if h.kind == K_RESULT {
                    job.sink
                        .ok(job.chunk, h.a == wire::RESULT_PLAIN, w.link.rx.body());
                } else {
                    let e = match wire::decode::<RemoteError>(w.link.rx.body()) {
                        Ok(r) => Error::Remote(Box::new(r)),
                        Err(e) => e,
                    };
                    job.sink.err(job.chunk, e);
                }
                if retiring {
                    if let Some(w) = worker.take() {
                        retire(&shared, idx, w);
                    }
                }
            }
            other => {
                // The worker died (end-of-file) or spoke nonsense: reap it.
                let Some(w) = worker.take() else { continue };
                let (pid, exit) = lose_worker(&shared, idx, w, &other);
                let st = shared.lock();
                if st.run == Run::Terminated {
                    drop(st);
                    job.sink.err(job.chunk, Error::Terminated);
                } else if job.attempts < shared.retries {
                    job.attempts += 1;
                    shared.requeue_front(st, job);
                } else {
                    drop(st);
                    job.sink.err(job.chunk, Error::WorkerLost { pid, exit });
                }
            }
        }
    }
    if let Some(w) = worker.take() {
        retire(&shared, idx, w);
    }
    let mut st = shared.lock();
    st.live -= 1;
    drop(st);
    shared.done_cv.notify_all();
}

/// Ask a worker to exit, bounded; SIGKILL if it does not.
fn retire(shared: &Shared, idx: usize, mut w: Worker) {
    shared.lock().pids[idx] = None;
    let _ = w.link.send_raw(K_SHUTDOWN, 0, 0, &[]);
    w.reap(Duration::from_secs(2));
}
