//! The engine: one event loop that moves requests from the spider through
//! the scheduler to the downloader, and responses back to the spider.
//!
//! It is made of parts, each owning its state and its counters, as in
//! Scrapy's `engine.py`: admission (depth, offsite, robots.txt, slot keys),
//! the scheduler (frontier, duplicate filter, slots), the downloads (requests
//! on the wire, here or in worker processes), the downloader middlewares
//! (headers, cookies, retries, redirects), the scraper (parsing) and the item
//! thread (pipelines and exporter). The loop asks the downloads and the
//! scraper whether they must back off before it takes a request from the
//! scheduler, and routes what comes back. Everything but the item thread
//! belongs to the loop's one task, so nothing is locked per request.
//! Downloads run as tasks on the I/O runtime; parsing runs on a separate pool
//! of threads sized to the cores, so a CPU-heavy page never stalls the
//! network.

mod admission;
mod downloads;
mod event_loop;
mod health;
mod items;
mod memusage;
mod remote;
mod report;
mod responses;
mod robots_cache;
mod scraper;
mod throttle;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use tokio::sync::{mpsc, Notify};

use crate::downloader::dns::{DnsError, Resolver};
use crate::downloader::{DownloadError, Downloader};
use crate::exporter::{Format, ItemExporter, OpenMode};
use crate::middleware::{self, DownloaderMiddleware};
use crate::pipeline::{ItemPipeline, PipelineError};
use crate::request::Request;
use crate::response::Response;
use crate::scheduler::disk::DiskStore;
use crate::scheduler::store::{FrontierStore, PendingReader, StoreError};
use crate::scheduler::window::{Window, WINDOW};
use crate::scheduler::{DupeFilter, JobLog, Scheduler, SlotId, SlotPolicies};
use crate::settings::Settings;
use crate::spider::{Output, Spider};
use crate::stats::{CrawlReport, Progress, Stats};
use crate::workers::{Fleet, FleetEvent, Launcher, SharedGates};
use admission::{Admission, Source};
use downloads::{Downloads, Executor};
use scraper::Scraper;

/// Why a crawl could not run (a failing page never stops a crawl; these do).
#[derive(Debug, thiserror::Error)]
pub enum CrawlError {
    /// The parse threads could not be started.
    #[error("cannot start the parse threads: {0}")]
    ParsePool(std::io::Error),
    /// The output could not be written.
    #[error("writing items failed: {0}")]
    Export(std::io::Error),
    /// The spider could not be serialized for worker processes.
    #[error("cannot serialize the spider for worker processes: {0}")]
    SpiderConfig(#[from] serde_json::Error),
    /// Worker processes could not be started.
    #[error("cannot start worker processes: {0}")]
    Workers(#[from] spindle_exec::Error),
    /// The `--report` file could not be written.
    #[error("writing the report failed: {0}")]
    Report(std::io::Error),
    /// The job's store (JOBDIR) could not be opened, read or written.
    #[error(transparent)]
    Job(#[from] StoreError),
    /// The distributed job (REDIS_URL) could not be reached or read.
    #[error(transparent)]
    Distributed(#[from] crate::distributed::DistributedError),
    /// An item pipeline stage failed to open.
    #[error("item pipeline {name} cannot open: {error}")]
    Pipeline {
        /// The stage's name.
        name: String,
        /// Why it failed.
        error: PipelineError,
    },
}

/// Asks a running crawl to stop gracefully: no new requests, in-flight ones finish.
#[derive(Clone, Default)]
pub struct ShutdownHandle(Arc<Notify>);

impl ShutdownHandle {
    /// Asks the crawl to stop: no new requests start, those in flight finish.
    pub fn shutdown(&self) {
        self.0.notify_one();
    }

    /// Resolves when a shutdown was asked for.
    pub(crate) async fn notified(&self) {
        self.0.notified().await;
    }
}

/// A crawl, configured and ready to run.
pub struct Crawler {
    spider: Arc<dyn Spider>,
    settings: Arc<Settings>,
    resolved: HashMap<String, IpAddr>,
    exporter: Option<Box<dyn ItemExporter>>,
    output: Option<OutputFile>,
    progress: Arc<Progress>,
    shutdown: ShutdownHandle,
    launcher: Option<Launcher>,
    middlewares: Vec<Box<dyn DownloaderMiddleware>>,
    pipelines: Vec<Box<dyn ItemPipeline>>,
    report: Option<std::path::PathBuf>,
}

impl Crawler {
    /// A crawl of `spider` with `settings`, in this process.
    pub fn new(spider: impl Spider, settings: Settings) -> Self {
        Crawler {
            spider: Arc::new(spider),
            settings: Arc::new(settings),
            resolved: HashMap::new(),
            exporter: None,
            output: None,
            progress: Arc::default(),
            shutdown: ShutdownHandle::default(),
            launcher: None,
            middlewares: Vec::new(),
            pipelines: Vec::new(),
            report: None,
        }
    }

    /// A crawl whose fetching and parsing run in `processes` worker processes,
    /// while this process keeps the one scheduler, so every cap and delay
    /// holds across all of them. With `processes <= 1` it is [`Crawler::new`].
    ///
    /// The spider is serialized to each worker. The program's `main` must call
    /// `spindle_exec::init()` first: workers are the same binary run again.
    pub fn multiprocess<S>(
        spider: S,
        settings: Settings,
        processes: usize,
    ) -> Result<Self, CrawlError>
    where
        S: Spider + serde::Serialize + serde::de::DeserializeOwned,
    {
        let launcher = (processes > 1)
            .then(|| Launcher::new(&spider, processes))
            .transpose()?;
        let mut crawler = Crawler::new(spider, settings);
        crawler.launcher = launcher;
        Ok(crawler)
    }

    /// Sends every connection to `host` to `addr`, like curl's `--resolve`.
    pub fn resolve(mut self, host: &str, addr: IpAddr) -> Self {
        self.resolved.insert(host.to_ascii_lowercase(), addr);
        self
    }

    /// Where scraped items go.
    pub fn exporter(mut self, exporter: Box<dyn ItemExporter>) -> Self {
        self.exporter = Some(exporter);
        self
    }

    /// Writes items to a file, opened when the crawl starts. With a job
    /// (`JOBDIR`) that is resumed, the file is cut back to the length the job
    /// last recorded and continued, whatever `mode` says, so each item is in
    /// it once; `mode` applies when the job starts.
    pub fn output_file(
        mut self,
        path: impl Into<std::path::PathBuf>,
        format: Format,
        csv_fields: Option<Vec<String>>,
        mode: OpenMode,
    ) -> Self {
        self.output = Some(OutputFile {
            path: path.into(),
            format,
            csv_fields,
            mode,
        });
        self
    }

    /// Adds a downloader middleware, run after the built-in ones and those added before it.
    pub fn middleware(mut self, middleware: impl DownloaderMiddleware + 'static) -> Self {
        self.middlewares.push(Box::new(middleware));
        self
    }

    /// Adds an item pipeline stage, run after those added before it.
    pub fn pipeline(mut self, stage: impl ItemPipeline + 'static) -> Self {
        self.pipelines.push(Box::new(stage));
        self
    }

    /// Writes an HTML report to `path`: the crawl over time, its slots, and
    /// what limited it. Rewritten every few seconds while the crawl runs and
    /// once at its end; self-contained (inline SVG, nothing fetched).
    pub fn report(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.report = Some(path.into());
        self
    }

    /// Live figures for a progress display, readable while the crawl runs.
    pub fn progress(&self) -> Arc<Progress> {
        self.progress.clone()
    }

    /// A handle that stops the crawl gracefully from another task or thread.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.shutdown.clone()
    }

    /// Runs the crawl to its end and reports its stats. Must be called inside a tokio runtime.
    pub async fn run(mut self) -> Result<CrawlReport, CrawlError> {
        let distributed = self
            .settings
            .distributed()
            .map_err(|e| crate::distributed::DistributedError::Settings(e.to_string()))?;
        if distributed.is_some() {
            // Items go to the job in Redis, committed with their page
            // (`spindle export` writes them out); pipelines and a local
            // output would see a page again after a worker's death.
            if self.output.is_some() || self.exporter.is_some() || !self.pipelines.is_empty() {
                return Err(crate::distributed::DistributedError::Settings(
                    "a distributed crawl (REDIS_URL) keeps its items in Redis: give no output or \
                     pipeline, and write the items out with `spindle export`"
                        .into(),
                )
                .into());
            }
            return crate::distributed::run(crate::distributed::Parts {
                spider: self.spider,
                settings: self.settings,
                resolved: self.resolved,
                middlewares: self.middlewares,
                progress: self.progress,
                shutdown: self.shutdown,
            })
            .await;
        }
        for stage in &mut self.pipelines {
            stage.open().map_err(|error| CrawlError::Pipeline {
                name: stage.name().to_string(),
                error,
            })?;
        }
        let settings = self.settings;
        // A job's store is read before the output is opened: it says where the output resumes.
        let mut job = match settings.jobdir() {
            Some(dir) => Some(Job::open(dir, settings.concurrent_requests_per_ip > 0)?),
            None => None,
        };
        let mut exporter = self.exporter;
        if let Some(out) = self.output {
            let mode = match job.as_ref().and_then(|j| j.output_len) {
                Some(len) => OpenMode::ResumeAt(len),
                None => out.mode,
            };
            let opened = crate::exporter::open_with(&out.path, out.format, out.csv_fields, mode)
                .map_err(|e| {
                    CrawlError::Export(std::io::Error::new(
                        e.kind(),
                        format!("{}: {e}", out.path.display()),
                    ))
                })?;
            exporter = Some(opened);
        }
        let middlewares = builtin_middlewares(&settings, self.middlewares);
        if let Some((soft, hard)) = crate::downloader::fdlimit::raise_nofile_limit() {
            tracing::debug!(soft, hard, "file descriptor limit (RLIMIT_NOFILE)");
        }
        let resolver = Arc::new(Resolver::new(self.resolved.clone(), &settings));
        let (events_tx, events) = mpsc::unbounded_channel();
        let mut scheduler = Scheduler::new(SlotPolicies::from_settings(&settings));
        scheduler.set_robots_budget(settings.robots_budget());
        let (executor, parse_pool) = match self.launcher {
            Some(launcher) => {
                // Workers pass their slot's gate themselves, in shared memory.
                let gates = SharedGates::new()?;
                let for_slots = gates.clone();
                scheduler = scheduler.with_gates(move |slot| for_slots.for_slot(slot));
                let tx = events_tx.clone();
                let fleet = Fleet::start(
                    launcher,
                    (*settings).clone(),
                    self.resolved.clone(),
                    gates,
                    move |event| {
                        let _ = tx.send(Event::Fleet(event));
                    },
                )?;
                (Executor::Workers(Box::new(fleet)), None)
            }
            None => {
                let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
                let downloader = Downloader::new(settings.clone(), resolver.clone());
                let pool = scraper::ParsePool::new(threads).map_err(CrawlError::ParsePool)?;
                (Executor::InProcess(Arc::new(downloader)), Some(pool))
            }
        };
        let items = items::Items::start(
            self.pipelines,
            exporter,
            self.progress.clone(),
            job.as_mut().map(|j| j.take_store()),
        );
        let (mut resume, mut slot_states) = (Vec::new(), Vec::new());
        let job_base = job
            .as_mut()
            .map(|j| std::mem::take(&mut j.stats))
            .unwrap_or_default();
        let resumed = job.as_ref().is_some_and(|j| j.resumed);
        if let Some(job) = job {
            (resume, slot_states) =
                job.restore(&mut scheduler, items.job_sink(), items.committed())?;
        }
        let mut engine = Engine {
            admission: Admission::new(&settings, self.spider.allowed_domains(), resolver),
            scheduler,
            downloads: Downloads::new(
                executor,
                settings.concurrent_requests,
                settings.download_warnsize,
                settings.download_slow_after,
            ),
            scraper: Scraper::new(self.spider.clone(), parse_pool),
            throttle: throttle::Throttle::new(&settings),
            report: self.report.map(|path| report::recorder(path, &settings)),
            items,
            resume,
            middlewares,
            mw_stats: Stats::default(),
            health: health::Health::default(),
            spider: self.spider,
            settings,
            events_tx,
            progress: self.progress,
            closing: None,
            export_failed: false,
            memusage: memusage::MemoryUsage::default(),
            pages_received: 0,
            job_base,
            resumed,
            job_stats: event_loop::JobStatsClock {
                last: Instant::now(),
                pending: false,
            },
        };
        engine.restore_slot_states(slot_states);
        let started = (SystemTime::now(), Instant::now());
        let reason = engine.run(events, self.shutdown).await;
        engine.report_sample();
        let report_written = engine
            .report
            .as_mut()
            .map_or(Ok(()), |report| report.finish(&reason));
        // The top slots by requests, errors and wait (or all), and totals for the rest.
        let top = if engine.settings.stats_slots_all {
            usize::MAX
        } else {
            engine.settings.stats_slots_top
        };
        let mut table = std::mem::take(&mut engine.scheduler.retired);
        for (key, s) in engine.scheduler.slot_stats() {
            table.add(key, s, top);
        }
        let (slots, other_slots) = table.finish();
        let workers = engine
            .downloads
            .fleet()
            .map(|fleet| fleet.shutdown())
            .unwrap_or_default();
        // Each part kept its own counters; the report is their sum, and a
        // resumed job's counters carry on from its earlier runs.
        engine.send_job_stats(None);
        let mut stats = engine.counters();
        let (item_stats, written) = engine.items.finish(reason == "finished");
        stats.merge(&engine.memusage.stats);
        stats.merge(&item_stats);
        let mut report = CrawlReport::new(&stats, started.0, started.1.elapsed(), &reason, slots);
        report.workers = workers;
        report.other_slots = other_slots;
        if let Err(error) = written {
            report.output_error = Some(match error {
                items::ItemsError::Output(e) => format!("writing items failed: {e}"),
                items::ItemsError::Store(e) => e.to_string(),
            });
            // The crawl may have ended before it sent another item and noticed.
            report.finish_reason = "export_error".to_string();
        }
        report_written.map_err(CrawlError::Report)?;
        Ok(report)
    }
}

/// Where `Crawler::output_file` writes.
struct OutputFile {
    path: std::path::PathBuf,
    format: Format,
    csv_fields: Option<Vec<String>>,
    mode: OpenMode,
}

/// A job (JOBDIR) as read at the start of a run.
struct Job {
    store: Option<Box<dyn FrontierStore>>,
    reader: Option<Box<dyn PendingReader>>,
    /// Per queue: the last request number read back, and how many wait on disk.
    on_disk: Vec<(String, u64, usize)>,
    output_len: Option<u64>,
    next_id: u64,
    seen: DupeFilter,
    pending: Vec<Request>,
    /// The counters as of the last commit.
    stats: Stats,
    /// Whether an earlier run committed anything.
    resumed: bool,
    /// Per slot or origin: robots.txt answers and pauses.
    slot_states: SlotStates,
}

/// Kept state by key: robots.txt answers and slot pauses.
type SlotStates = Vec<(String, Vec<u8>)>;

impl Job {
    /// Per-IP slots gather several hosts' queues, so with them the whole
    /// frontier comes back to memory; otherwise a window of each queue.
    fn open(dir: &std::path::Path, per_ip: bool) -> Result<Self, StoreError> {
        let window_size = if per_ip { usize::MAX } else { WINDOW };
        let store = DiskStore::open(dir)?;
        let state = store.state()?;
        // Straight into the set: a list of every fingerprint first would
        // cost 8 more bytes per URL while the job opens.
        let mut seen = DupeFilter::default();
        store.for_each_seen(&mut |fp| {
            seen.insert_fingerprint(fp);
        })?;
        // Each queue's oldest requests come back to memory; the rest stay on
        // disk behind the scheduler's window.
        let mut pending = Vec::new();
        let mut on_disk = Vec::new();
        for (queue, n) in store.backlog()? {
            let window = store.pending(&queue, 0, window_size)?;
            let cursor = window.last().map_or(0, |p| p.id);
            on_disk.push((queue, cursor, (n as usize).saturating_sub(window.len())));
            for stored in window {
                let request: Request =
                    postcard::from_bytes(&stored.request).map_err(|e| StoreError::Corrupt {
                        path: dir.display().to_string(),
                        message: format!("request {}: {e}", stored.id),
                    })?;
                pending.push(request);
            }
        }
        // Oldest first, as they were admitted: the crawl stays breadth-first.
        pending.sort_by_key(|r| r.job);
        if state.last_commit > 0.0 {
            tracing::info!(
                job = %dir.display(),
                pages_done = state.pages_done,
                queued = pending.len(),
                seen = seen.len(),
                finished = state.finished,
                "resuming job"
            );
        }
        let reader = store.pending_reader();
        let slot_states = store.slot_states()?;
        let stats = match &state.stats {
            Some(json) => Stats::from_json(json).map_err(|e| StoreError::Corrupt {
                path: dir.display().to_string(),
                message: format!("stats: {e}"),
            })?,
            None => Stats::default(),
        };
        Ok(Job {
            stats,
            resumed: state.last_commit > 0.0,
            slot_states,
            store: Some(Box::new(store)),
            reader: Some(reader),
            on_disk,
            output_len: state.output_len,
            next_id: state.next_id,
            seen,
            pending,
        })
    }

    fn take_store(&mut self) -> Box<dyn FrontierStore> {
        self.store.take().expect("taken once")
    }

    /// Gives the scheduler the seen set and the job's records; returns the
    /// requests still pending, to admit again.
    fn restore(
        mut self,
        scheduler: &mut Scheduler,
        sink: Box<dyn FnMut(crate::scheduler::JobOp) + Send>,
        committed: Arc<std::sync::atomic::AtomicU64>,
    ) -> Result<(Vec<Request>, SlotStates), StoreError> {
        scheduler.restore_seen(self.seen);
        scheduler.set_job(JobLog::new(self.next_id, sink));
        // Everything the store holds was committed by an earlier run.
        committed.fetch_max(
            self.next_id.saturating_sub(1),
            std::sync::atomic::Ordering::Release,
        );
        let reader = self.reader.take().expect("taken once");
        let mut window = Window::new(reader, committed);
        for (queue, cursor, n) in self.on_disk {
            window.resume(queue, cursor, n);
        }
        scheduler.set_window(window);
        Ok((self.pending, self.slot_states))
    }
}

impl Engine {
    /// A resumed job's robots.txt answers and slot pauses, applied before
    /// any request is admitted, so the first request after a restart already
    /// obeys them.
    fn restore_slot_states(&mut self, states: SlotStates) {
        let (now, wall) = (Instant::now(), SystemTime::now());
        for (key, state) in states {
            if let Some(origin) = key.strip_prefix(admission::ROBOTS_STATE) {
                self.admission
                    .restore_robots(origin, &state, &mut self.scheduler, &self.events_tx);
            } else if let Some(slot) = key.strip_prefix(crate::scheduler::PAUSE_STATE) {
                let Ok(bytes) = <[u8; 8]>::try_from(&state[..]) else {
                    continue;
                };
                let until = std::time::UNIX_EPOCH
                    + std::time::Duration::from_secs_f64(f64::from_be_bytes(bytes).max(0.0));
                if let Ok(left) = until.duration_since(wall) {
                    let id = self.scheduler.slot(slot);
                    self.scheduler.pause(id, now + left, now);
                }
            }
        }
    }
}

/// The crawl's own middlewares around the user's: default headers and
/// cookies before them, retries, redirects and the non-2xx filter after.
pub(crate) fn builtin_middlewares(
    settings: &Settings,
    user: Vec<Box<dyn DownloaderMiddleware>>,
) -> Vec<Box<dyn DownloaderMiddleware>> {
    let headers = settings
        .default_request_headers
        .iter()
        .filter_map(|(name, value)| crate::request::parse_header(name, value).ok())
        .collect();
    let mut chain: Vec<Box<dyn DownloaderMiddleware>> =
        vec![Box::new(middleware::DefaultHeaders::new(headers))];
    if settings.cookies_enabled {
        chain.push(Box::new(middleware::Cookies::new(settings.cookies_debug)));
    }
    chain.extend(user);
    chain.push(Box::new(middleware::Retry::new(settings)));
    chain.push(Box::new(middleware::Redirect::new(
        settings.redirect_max_times,
    )));
    chain.push(Box::new(middleware::HttpError));
    chain
}

pub(crate) fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_string())
}

enum Event {
    Fleet(FleetEvent),
    Downloaded {
        slot: SlotId,
        /// The id [`downloads::Downloads::start`] gave it.
        id: u64,
        result: Box<Result<Response, (Request, DownloadError)>>,
    },
    /// A download has waited `DOWNLOAD_SLOW_AFTER` without an answer.
    Slow {
        id: u64,
    },
    Parsed {
        /// The job's (queue, number) of the page, when a job holds it.
        job: Option<crate::scheduler::JobRef>,
        depth: u32,
        backlog: usize,
        result: Result<Output, String>,
    },
    Resolved {
        host: String,
        result: Result<IpAddr, DnsError>,
    },
}

/// The parts, each with its own state and counters; the event loop asks
/// them and routes between them.
struct Engine {
    spider: Arc<dyn Spider>,
    settings: Arc<Settings>,
    /// Depth, offsite, robots.txt and the slot key.
    admission: Admission,
    /// The frontier, the duplicate filter and the slots.
    scheduler: Scheduler,
    /// Requests on the wire, here or in worker processes.
    downloads: Downloads,
    /// Responses waiting for, or in, the spider's parse.
    scraper: Scraper,
    /// AutoThrottle: moves each slot's delay or concurrency after its responses.
    throttle: throttle::Throttle,
    /// `--report`: snapshots of the parts over time.
    report: Option<crate::report::Recorder>,
    /// Pipelines and the exporter, on their own thread.
    items: items::Items,
    middlewares: Vec<Box<dyn DownloaderMiddleware>>,
    /// The counters the middlewares keep (through their `Context`).
    mw_stats: Stats,
    /// Failing slots, descriptor shortages, the slot GC.
    health: health::Health,
    events_tx: mpsc::UnboundedSender<Event>,
    progress: Arc<Progress>,
    closing: Option<String>,
    export_failed: bool,
    /// A resumed job's pending requests, admitted again when the loop starts.
    resume: Vec<Request>,
    /// Scrapy's MemoryUsage extension.
    memusage: memusage::MemoryUsage,
    /// Page responses, robots.txt left out (for `CLOSESPIDER_PAGECOUNT`).
    pages_received: u64,
    /// A job's counters as of its last commit before this run (see
    /// [`Engine::send_job_stats`]); empty without a job or on its first run.
    job_base: Stats,
    /// Whether this run resumes a job (its start requests are seen already).
    resumed: bool,
    job_stats: event_loop::JobStatsClock,
}
