//! The item part: every scraped item passes the item pipelines, then the
//! exporter, on a thread of its own, which keeps the item counters.
//!
//! The thread flushes the exporter whenever it has caught up, so the output
//! file is valid and current without a flush per item.
//!
//! With a job (JOBDIR) the thread also owns the job's store, and the
//! scheduler's records reach it through the same channel as the items. So
//! for each page it sees the page's items, then the requests the page led
//! to, then the page's completion, in that order. It gathers them into one
//! commit (group commit, every [`COMMIT_INTERVAL`] or [`COMMIT_OPS`]
//! operations): first the output is flushed and synced, then one atomic
//! commit records the pages done, the requests they led to and the output's
//! length after their items. A resumed job cuts the output back to that
//! length, so an item is in the output once whatever instant the process died.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use tracing::warn;

use crate::exporter::ItemExporter;
use crate::item::Item;
use crate::pipeline::{ItemPipeline, PipelineError};
use crate::scheduler::store::{Commit, FrontierStore, StoreError};
use crate::scheduler::JobOp;
use crate::stats::{Progress, Stats};

/// The longest a job's progress waits in memory before it is committed.
pub(super) const COMMIT_INTERVAL: Duration = Duration::from_millis(200);
/// A commit is made sooner once it holds this many operations.
pub(super) const COMMIT_OPS: usize = 10_000;

/// What reaches the item thread, in the order the engine sent it.
pub(super) enum ToItems {
    Item(Item),
    Job(JobOp),
    /// The engine's counters as of the job records sent before this (see
    /// `Engine::send_job_stats`). A commit ends at one of these, so the
    /// counters it stores match the pages it records done.
    Stats(Stats),
    /// The crawl is over (and ran to its end, if true): write, commit, stop.
    /// Sent rather than left to the channel's closing, because the
    /// scheduler's job sink holds a sender until the engine is dropped.
    Close(bool),
}

/// Why the item thread stopped early.
#[derive(Debug)]
pub(super) enum ItemsError {
    Output(std::io::Error),
    Store(StoreError),
}

/// Job records sent but not yet taken past which the engine starts no new
/// request, so the records waiting for the store cannot grow without bound.
pub(super) const JOB_BACKLOG_MAX: usize = 20_000;

/// The engine's handle on the item thread.
pub(super) struct Items {
    tx: Option<std_mpsc::Sender<ToItems>>,
    /// Job records sent and not yet taken by the thread.
    job_backlog: Arc<AtomicUsize>,
    /// The highest request number the job's store has committed.
    committed: Arc<AtomicU64>,
    /// Whether job records were sent since the engine last sent its counters.
    ops_sent: Arc<std::sync::atomic::AtomicBool>,
    thread: JoinHandle<(Stats, Result<(), ItemsError>)>,
}

impl Items {
    /// Starts the item thread. The pipelines are already open.
    pub(super) fn start(
        pipelines: Vec<Box<dyn ItemPipeline>>,
        exporter: Option<Box<dyn ItemExporter>>,
        progress: Arc<Progress>,
        store: Option<Box<dyn FrontierStore>>,
    ) -> Self {
        let (tx, rx) = std_mpsc::channel::<ToItems>();
        let job_backlog = Arc::new(AtomicUsize::new(0));
        let committed = Arc::new(AtomicU64::new(0));
        let (backlog, done) = (job_backlog.clone(), committed.clone());
        let thread = std::thread::Builder::new()
            .name("spindle-items".into())
            .spawn(move || {
                let mut part = ItemThread {
                    pipelines,
                    exporter,
                    progress,
                    stats: Stats::default(),
                    job: store.map(|store| JobWriter {
                        store,
                        commit: Commit::default(),
                        tail: Commit::default(),
                        stats: None,
                        ops: 0,
                        last: Instant::now(),
                        backlog,
                        committed: done,
                    }),
                };
                let result = part.run(rx);
                part.close_pipelines();
                if let Some(job) = part.job.take() {
                    close_in_background(job.store);
                }
                (part.stats, result)
            })
            .expect("spawn the item thread");
        Items {
            tx: Some(tx),
            job_backlog,
            committed,
            ops_sent: Arc::default(),
            thread,
        }
    }

    /// A sender for the scheduler's job records, which must queue behind the items.
    pub(super) fn job_sink(&self) -> Box<dyn FnMut(JobOp) + Send> {
        let tx = self.tx.clone().expect("the item thread runs");
        let backlog = self.job_backlog.clone();
        let sent = self.ops_sent.clone();
        Box::new(move |op| {
            backlog.fetch_add(1, Ordering::Relaxed);
            sent.store(true, Ordering::Relaxed);
            let _ = tx.send(ToItems::Job(op));
        })
    }

    /// Whether job records were sent since the last [`Items::send_job_stats`].
    pub(super) fn job_ops_sent(&self) -> bool {
        self.ops_sent.swap(false, Ordering::Relaxed)
    }

    /// Sends the engine's counters, to be committed with the job records sent before them.
    pub(super) fn send_job_stats(&self, stats: Stats) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(ToItems::Stats(stats));
        }
    }

    /// The highest request number the job's store has committed, for the scheduler's window.
    pub(super) fn committed(&self) -> Arc<AtomicU64> {
        self.committed.clone()
    }

    /// Whether the job's records wait in such numbers that no request should start.
    pub(super) fn needs_backout(&self) -> bool {
        self.job_backlog.load(Ordering::Relaxed) >= JOB_BACKLOG_MAX
    }

    /// Hands an item over; false when the item thread has stopped (its output failed).
    pub(super) fn send(&self, item: Item) -> bool {
        self.tx
            .as_ref()
            .is_some_and(|tx| tx.send(ToItems::Item(item)).is_ok())
    }

    /// Waits for every item to be written (and with a job, committed); the
    /// item counters, and whether the output and store held.
    pub(super) fn finish(mut self, finished: bool) -> (Stats, Result<(), ItemsError>) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(ToItems::Close(finished));
        }
        self.thread.join().unwrap_or_else(|_| {
            (
                Stats::default(),
                Err(ItemsError::Output(std::io::Error::other(
                    "item thread panicked",
                ))),
            )
        })
    }
}

/// The job's commit being gathered.
struct JobWriter {
    store: Box<dyn FrontierStore>,
    /// What the next commit records: everything up to the engine's last counters.
    commit: Commit,
    /// Records that came after the engine's last counters: they wait for the
    /// next counters, so a commit never records a page its counters miss.
    tail: Commit,
    /// The job's counters as of the end of `commit`.
    stats: Option<Stats>,
    ops: usize,
    last: Instant,
    backlog: Arc<AtomicUsize>,
    committed: Arc<AtomicU64>,
}

struct ItemThread {
    pipelines: Vec<Box<dyn ItemPipeline>>,
    exporter: Option<Box<dyn ItemExporter>>,
    progress: Arc<Progress>,
    stats: Stats,
    job: Option<JobWriter>,
}

impl ItemThread {
    fn run(&mut self, rx: std_mpsc::Receiver<ToItems>) -> Result<(), ItemsError> {
        self.flush()?;
        if let Some(job) = &mut self.job {
            // Where this run starts writing, recorded before anything else is.
            job.commit.output_len = Some(self.exporter.as_ref().map_or(0, |e| e.position()));
        }
        self.commit(true)?;
        loop {
            let next = match &self.job {
                Some(job) => {
                    match rx.recv_timeout(COMMIT_INTERVAL.saturating_sub(job.last.elapsed())) {
                        Ok(msg) => Some(msg),
                        Err(std_mpsc::RecvTimeoutError::Timeout) => None,
                        Err(std_mpsc::RecvTimeoutError::Disconnected) => break,
                    }
                }
                None => match rx.recv() {
                    Ok(msg) => Some(msg),
                    Err(_) => break,
                },
            };
            let mut closed = false;
            if let Some(msg) = next {
                let _whole_batch = crate::exporter::lock_writes();
                closed |= self.take(msg)?;
                while !closed {
                    match rx.try_recv() {
                        Ok(msg) => closed |= self.take(msg)?,
                        Err(_) => break,
                    }
                }
                self.flush()?;
            }
            if closed {
                break;
            }
            self.commit(false)?;
        }
        self.flush()?;
        self.commit(true)
    }

    /// Takes one message; true when it closes the thread.
    fn take(&mut self, msg: ToItems) -> Result<bool, ItemsError> {
        match msg {
            ToItems::Item(item) => self
                .take_item(item)
                .map(|()| false)
                .map_err(ItemsError::Output),
            ToItems::Job(op) => {
                let position = self.exporter.as_ref().map_or(0, |e| e.position());
                if let Some(job) = &mut self.job {
                    job.backlog.fetch_sub(1, Ordering::Relaxed);
                    let c = &mut job.tail;
                    job.ops += 1;
                    match op {
                        JobOp::Push(pending, fp) => {
                            c.next_id = Some(c.next_id.unwrap_or(0).max(pending.id + 1));
                            c.pushed.push(pending);
                            c.seen.extend(fp);
                        }
                        JobOp::SlotState(key, state) => c.slot_state.push((key, state)),
                        JobOp::Done(queue, id, page) => {
                            c.done.push((queue, id));
                            c.pages += u64::from(page);
                            // Every item of this page is before this point.
                            c.output_len = Some(position);
                        }
                    }
                }
                Ok(false)
            }
            ToItems::Stats(mut stats) => {
                if let Some(job) = &mut self.job {
                    stats.merge(&self.stats);
                    job.stats = Some(stats);
                    absorb(&mut job.commit, &mut job.tail);
                }
                Ok(false)
            }
            ToItems::Close(finished) => {
                if let Some(job) = &mut self.job {
                    // The engine sent its last counters just before; records
                    // after them, if any, are recorded all the same.
                    absorb(&mut job.commit, &mut job.tail);
                    job.commit.finished = Some(finished);
                }
                Ok(true)
            }
        }
    }

    /// Commits the job's gathered progress if it is due (or `now`): the
    /// output is made durable first, so the store never records more output
    /// than the disk holds.
    fn commit(&mut self, now: bool) -> Result<(), ItemsError> {
        let Some(job) = &mut self.job else {
            return Ok(());
        };
        if job.commit.is_empty() {
            // Nothing to commit: the interval counts from the next operation's time.
            job.last = Instant::now();
            return Ok(());
        }
        if !(now || job.ops >= COMMIT_OPS || job.last.elapsed() >= COMMIT_INTERVAL) {
            return Ok(());
        }
        if job.commit.output_len.is_some() {
            if let Some(exporter) = &mut self.exporter {
                exporter.sync().map_err(ItemsError::Output)?;
            }
        }
        job.commit.stats = job.stats.as_ref().map(Stats::to_json);
        job.commit.at = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        job.store.commit(&job.commit).map_err(ItemsError::Store)?;
        if let Some(next) = job.commit.next_id {
            job.committed.fetch_max(next - 1, Ordering::Release);
        }
        job.commit = Commit::default();
        job.ops = job.tail.pushed.len() + job.tail.done.len() + job.tail.slot_state.len();
        job.last = Instant::now();
        Ok(())
    }

    fn take_item(&mut self, mut item: Item) -> std::io::Result<()> {
        for stage in &mut self.pipelines {
            item = match stage.process(item) {
                Ok(item) => item,
                Err(PipelineError::Drop(reason)) => {
                    self.stats.inc("item_dropped_count");
                    self.stats
                        .inc(&format!("item_dropped_reasons_count/{reason}"));
                    return Ok(());
                }
                Err(PipelineError::Failed(error)) => {
                    warn!(pipeline = stage.name(), %error, "item pipeline failed; item lost");
                    self.stats.inc("item_pipeline/error_count");
                    return Ok(());
                }
            };
        }
        if let Some(exporter) = &mut self.exporter {
            exporter.export(&item)?;
        }
        self.stats.inc("item_scraped_count");
        self.progress
            .items
            .store(self.stats.get("item_scraped_count"), Ordering::Relaxed);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), ItemsError> {
        match &mut self.exporter {
            Some(exporter) => exporter.flush().map_err(ItemsError::Output),
            None => Ok(()),
        }
    }

    fn close_pipelines(&mut self) {
        for stage in &mut self.pipelines {
            if let Err(error) = stage.close() {
                warn!(pipeline = stage.name(), %error, "item pipeline failed to close");
                self.stats.inc("item_pipeline/error_count");
            }
        }
    }
}

/// Moves the records of `tail` to the end of `commit`.
fn absorb(commit: &mut Commit, tail: &mut Commit) {
    commit.pushed.append(&mut tail.pushed);
    commit.seen.append(&mut tail.seen);
    commit.done.append(&mut tail.done);
    commit.slot_state.append(&mut tail.slot_state);
    commit.pages += std::mem::take(&mut tail.pages);
    if let Some(len) = tail.output_len.take() {
        commit.output_len = Some(len);
    }
    if let Some(next) = tail.next_id.take() {
        commit.next_id = Some(commit.next_id.map_or(next, |n| n.max(next)));
    }
}

/// Closes a job's store on a thread of its own. Its last commit is already
/// with the operating system, so nothing waits on the close: closing fjall
/// joins its background threads, and its monitor sleeps 250 ms at a time,
/// which made up 40% of a 0.5 s job crawl of the Python docs. If the process
/// exits first, that is a kill after the last commit, which a job survives.
fn close_in_background(store: Box<dyn FrontierStore>) {
    let spawned = std::thread::Builder::new()
        .name("spindle-store-close".into())
        .spawn(move || drop(store));
    // Without a thread, the closure and the store in it were dropped, so closed, here.
    drop(spawned);
}
