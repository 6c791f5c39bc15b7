//! Multi-process mode: worker processes fetch and parse, one engine decides.
//!
//! Running several Scrapy processes multiplies the load on a site, because
//! each keeps its own slots (scrapyd#221). Here the engine keeps the only
//! scheduler and the only slots, and workers get a job only when its slot
//! lets it start, so `CONCURRENT_REQUESTS`, the per-domain and per-IP caps
//! and `DOWNLOAD_DELAY` mean across N processes exactly what they mean in one.
//!
//! Built on spindle-exec, each part for what it is good at:
//! - [`spindle_exec::Process`] starts each worker (the re-executed binary;
//!   it dies with the engine);
//! - two one-way pipes per worker carry jobs out and results back, so a
//!   worker's death shows as end-of-file on its result pipe at once;
//! - a [`spindle_exec::SharedArray`] holds per-worker counters that the
//!   workers update and the progress line reads without asking anyone.
//!
//! spindle-exec's `Pool` is not used: it runs one task per worker at a time,
//! and a worker here has many downloads in flight at once.
//!
//! A worker that dies (killed, aborted, out of memory) is noticed from its
//! pipe, replaced, and every job it held is queued again in its slot. A page
//! that has killed [`MAX_CRASHES`] workers is given up and counted.

pub mod child;
pub mod gates;
pub mod protocol;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use spindle_exec::{pipe, Process, SharedArray};
use tracing::{info, warn};

use crate::downloader::slot::Pacing;
use crate::request::Request;
use crate::scheduler::SlotId;
use crate::settings::Settings;
use crate::spider::Spider;
use crate::stats::WorkerReport;
use child::WorkerArgs;
pub use gates::SharedGates;
use protocol::*;

/// Workers a single page may kill before it is given up.
pub const MAX_CRASHES: u32 = 3;

type Launch = Arc<dyn Fn(WorkerArgs) -> spindle_exec::Result<Process> + Send + Sync>;

/// How to start a worker for one spider type, and how many to run.
#[derive(Clone)]
pub struct Launcher {
    launch: Launch,
    spider_json: String,
    pub processes: usize,
}

impl Launcher {
    pub fn new<S: Spider + Serialize + DeserializeOwned>(
        spider: &S,
        processes: usize,
    ) -> Result<Self, serde_json::Error> {
        Ok(Launcher {
            launch: Arc::new(|args| Process::spawn(child::worker_main::<S>, args)),
            spider_json: serde_json::to_string(spider)?,
            processes,
        })
    }
}

/// What a worker's reader thread reports to the engine.
#[derive(Debug)]
pub enum FleetEvent {
    Message(FromWorker),
    /// A message from the worker could not be decoded; `Gone` follows.
    Undecodable {
        error: String,
    },
    /// The worker's result pipe ended: it exited or died.
    Gone {
        worker: usize,
    },
}

/// A job in a worker's hands.
pub struct JobState {
    pub id: u64,
    pub worker: usize,
    pub slot: SlotId,
    pub request: Request,
    /// Downloaded; its parse result is still to come.
    pub parsing: bool,
    /// Bytes of body the worker holds for parsing, counted in the engine's parse backlog.
    pub backlog: usize,
}

struct Worker {
    process: Process,
    pid: u32,
    row: usize,
    jobs: usize,
    outbox: Option<mpsc::Sender<Job>>,
}

/// The engine's side of the worker processes.
pub struct Fleet {
    launcher: Launcher,
    settings: Settings,
    resolve: HashMap<String, IpAddr>,
    counters: SharedArray<AtomicU64>,
    gates: SharedGates,
    notify: Arc<dyn Fn(FleetEvent) + Send + Sync>,
    workers: Vec<Option<Worker>>,
    next_row: usize,
    jobs: HashMap<u64, JobState>,
    next_job: u64,
    finished: Vec<WorkerReport>,
}

impl Fleet {
    pub fn start(
        launcher: Launcher,
        settings: Settings,
        resolve: HashMap<String, IpAddr>,
        gates: SharedGates,
        notify: impl Fn(FleetEvent) + Send + Sync + 'static,
    ) -> spindle_exec::Result<Fleet> {
        let counters = SharedArray::new(MAX_ROWS * COUNTERS)?;
        let mut fleet = Fleet {
            workers: (0..launcher.processes).map(|_| None).collect(),
            launcher,
            settings,
            resolve,
            counters,
            gates,
            notify: Arc::new(notify),
            next_row: 0,
            jobs: HashMap::new(),
            next_job: 0,
            finished: Vec::new(),
        };
        for i in 0..fleet.workers.len() {
            fleet.spawn(i)?;
        }
        Ok(fleet)
    }

    fn spawn(&mut self, index: usize) -> spindle_exec::Result<()> {
        let (job_reader, job_writer) = pipe(false)?;
        let (result_reader, result_writer) = pipe(false)?;
        let row = self.next_row.min(MAX_ROWS - 1);
        self.next_row += 1;
        let process = (self.launcher.launch)(WorkerArgs {
            spider_json: self.launcher.spider_json.clone(),
            settings: self.settings.clone(),
            resolve: self.resolve.clone(),
            jobs: job_reader,
            results: result_writer,
            counters: self.counters.clone(),
            gates: self.gates.clone(),
            row,
        })?;
        let pid = process.pid().unwrap_or(0);
        info!(worker = index, pid, "worker process started");

        let (outbox, jobs) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name(format!("spindle-jobs-{index}"))
            .spawn(move || {
                // Dropping the writer when the engine is done is the worker's signal to exit.
                while let Ok(job) = jobs.recv() {
                    if job_writer.send(&job).is_err() {
                        break;
                    }
                }
            })?;
        let notify = self.notify.clone();
        std::thread::Builder::new()
            .name(format!("spindle-results-{index}"))
            .spawn(move || {
                loop {
                    match result_reader.recv::<FromWorker>() {
                        Ok(msg) => notify(FleetEvent::Message(msg)),
                        // A message that does not decode is a bug between two
                        // builds of one binary. Which job it answered is lost with
                        // it, so the worker is treated as gone: it is replaced and
                        // every job it held is queued again, rather than one job
                        // staying in flight forever.
                        Err(spindle_exec::Error::Decode(error)) => {
                            notify(FleetEvent::Undecodable { error });
                            break;
                        }
                        Err(_) => break,
                    }
                }
                notify(FleetEvent::Gone { worker: index });
            })?;
        self.workers[index] = Some(Worker {
            process,
            pid,
            row,
            jobs: 0,
            outbox: Some(outbox),
        });
        Ok(())
    }

    pub fn has_workers(&self) -> bool {
        self.workers.iter().any(Option::is_some)
    }

    /// Hands a started request to the least busy worker, which passes the
    /// slot's shared gate itself just before it sends.
    pub fn submit(&mut self, slot: SlotId, request: Request, pacing: Pacing) -> bool {
        let Some((index, worker)) = self
            .workers
            .iter_mut()
            .enumerate()
            .filter_map(|(i, w)| w.as_mut().map(|w| (i, w)))
            .min_by_key(|(_, w)| w.jobs)
        else {
            return false;
        };
        let Some(outbox) = worker.outbox.clone() else {
            return false;
        };
        worker.jobs += 1;
        self.next_job += 1;
        let job = Job {
            id: self.next_job,
            request: request.clone(),
            ticket: SharedGates::ticket(slot, &pacing),
        };
        self.jobs.insert(
            job.id,
            JobState {
                id: job.id,
                worker: index,
                slot,
                request,
                parsing: false,
                backlog: 0,
            },
        );
        let _ = outbox.send(job);
        true
    }

    /// A job's download ended. Keeps the job if the worker will send its
    /// parse result, with the body bytes it holds until then.
    pub fn fetched(
        &mut self,
        id: u64,
        parse_follows: bool,
        backlog: usize,
    ) -> Option<(SlotId, Request)> {
        let job = self.jobs.get_mut(&id)?;
        let taken = (job.slot, job.request.clone());
        if parse_follows {
            job.parsing = true;
            job.backlog = backlog;
        } else {
            self.finish(id);
        }
        Some(taken)
    }

    /// A job is done; returns its request's depth and parse backlog if it was
    /// waiting for a parse result.
    pub fn parsed(&mut self, id: u64) -> Option<(u32, usize, Option<crate::scheduler::JobRef>)> {
        let job = self.jobs.get(&id)?;
        if !job.parsing {
            return None;
        }
        let stored = (job.request.job != 0).then(|| (job.request.queue_key(), job.request.job));
        let done = (job.request.depth, job.backlog, stored);
        self.finish(id);
        Some(done)
    }

    /// The engine no longer expects a parse result for this job; returns its backlog.
    pub fn forget(&mut self, id: u64) -> usize {
        match self.jobs.get(&id) {
            Some(job) if job.parsing => {
                let backlog = job.backlog;
                self.finish(id);
                backlog
            }
            _ => 0,
        }
    }

    fn finish(&mut self, id: u64) {
        if let Some(job) = self.jobs.remove(&id) {
            if let Some(w) = self.workers[job.worker].as_mut() {
                w.jobs = w.jobs.saturating_sub(1);
            }
        }
    }

    /// A worker is gone: reaps it and returns the jobs it held, and the one
    /// it was parsing when it died, if any.
    pub fn gone(&mut self, index: usize) -> (Vec<JobState>, Option<u64>) {
        let Some(mut worker) = self.workers[index].take() else {
            return (Vec::new(), None);
        };
        let parsing = self.row(worker.row)[C_PARSING].checked_sub(1);
        let exit = reap(&mut worker.process, Duration::from_secs(2));
        let report = self.report(&worker, exit);
        if exit != Some(0) {
            warn!(
                worker = index,
                pid = worker.pid,
                ?exit,
                "worker process died"
            );
        }
        self.finished.push(report);
        let ids: Vec<u64> = self
            .jobs
            .iter()
            .filter(|(_, j)| j.worker == index)
            .map(|(id, _)| *id)
            .collect();
        let jobs = ids
            .into_iter()
            .filter_map(|id| self.jobs.remove(&id).map(|job| (id, job)))
            .collect::<Vec<_>>();
        let culprit = parsing.filter(|id| jobs.iter().any(|(j, _)| j == id));
        (jobs.into_iter().map(|(_, job)| job).collect(), culprit)
    }

    /// Starts a worker in place of one that is gone.
    pub fn replace(&mut self, index: usize) -> spindle_exec::Result<()> {
        self.spawn(index)
    }

    fn row(&self, row: usize) -> [u64; COUNTERS] {
        let cells = &self.counters;
        std::array::from_fn(|k| cells[row * COUNTERS + k].load(Ordering::Relaxed))
    }

    fn report(&self, worker: &Worker, exit: Option<i32>) -> WorkerReport {
        let c = self.row(worker.row);
        WorkerReport {
            pid: worker.pid,
            requests: c[C_REQUESTS],
            responses: c[C_RESPONSES],
            bytes: c[C_BYTES],
            items: c[C_ITEMS],
            exit_code: exit,
        }
    }

    /// Responses and items so far, summed over every worker, from shared memory.
    pub fn live_totals(&self) -> (u64, u64) {
        (0..self.next_row.min(MAX_ROWS)).fold((0, 0), |(r, i), row| {
            let c = self.row(row);
            (r + c[C_RESPONSES], i + c[C_ITEMS])
        })
    }

    /// Closes every worker's job pipe, waits for them to exit, and reports on each.
    pub fn shutdown(&mut self) -> Vec<WorkerReport> {
        for w in self.workers.iter_mut().flatten() {
            w.outbox = None;
        }
        let workers: Vec<Worker> = self.workers.iter_mut().filter_map(Option::take).collect();
        for mut w in workers {
            let exit = reap(&mut w.process, Duration::from_secs(5));
            let report = self.report(&w, exit);
            self.finished.push(report);
        }
        std::mem::take(&mut self.finished)
    }
}

/// Waits up to `grace` for a worker to exit, then kills it; its exit code, once reaped.
fn reap(process: &mut Process, grace: Duration) -> Option<i32> {
    match process.join_timeout(grace) {
        Ok(Some(code)) => Some(code),
        _ => {
            let _ = process.kill();
            process.join_timeout(Duration::from_secs(2)).ok().flatten()
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        // An engine that stops early (a panic, an error) leaves no worker behind.
        for w in self.workers.iter_mut().flatten() {
            let _ = w.process.kill();
        }
    }
}
