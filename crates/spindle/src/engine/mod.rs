//! The engine: one event loop that moves requests from the spider through
//! the scheduler to the downloader, and responses back to the spider.
//!
//! The loop owns the scheduler, the stats and every counter, so nothing is
//! locked per request. Downloads run as tasks on the I/O runtime; parsing runs
//! on a separate pool of threads sized to the cores, so a CPU-heavy page never
//! stalls the network. Each finished download or parse comes back to the loop
//! as an event.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use rand::rngs::SmallRng;
use rand::SeedableRng;
use tokio::sync::{mpsc, Notify};
use tracing::{debug, info, warn};
use url::Url;

use crate::downloader::dns::{DnsError, Resolver};
use crate::downloader::{DownloadError, Downloader};
use crate::exporter::ItemExporter;
use crate::middleware::{self, DownloaderMiddleware};
use crate::offsite::OffsiteFilter;
use crate::pipeline::{ItemPipeline, PipelineError};
use crate::request::{Purpose, Request};
use crate::response::Response;
use crate::retry;
use crate::robots::{self, RobotsRules};
use crate::scheduler::{Dispatch, Scheduler, SlotId, SlotPolicies};
use crate::settings::Settings;
use crate::spider::{Output, Spider};
use crate::stats::{CrawlReport, Progress, Stats};
use crate::workers::{Fleet, FleetEvent, Launcher};

/// Bytes of downloaded bodies allowed to wait for parsing before the engine
/// stops starting downloads (Scrapy's `SCRAPER_SLOT_MAX_ACTIVE_SIZE`; each
/// response counts at least 1 KiB, as there).
mod admission;
mod event_loop;
mod items;
mod remote;
mod responses;

const PARSE_BACKLOG_BYTES: usize = 5_000_000;

/// Why a crawl could not run (a failing page never stops a crawl; these do).
#[derive(Debug, thiserror::Error)]
pub enum CrawlError {
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
    /// The parse threads could not be started.
    #[error("cannot start the parse threads: {0}")]
    ParsePool(#[from] rayon::ThreadPoolBuildError),
    /// The output could not be written.
    #[error("writing items failed: {0}")]
    Export(std::io::Error),
    /// The spider could not be serialized for worker processes.
    #[error("cannot serialize the spider for worker processes: {0}")]
    SpiderConfig(#[from] serde_json::Error),
    /// Worker processes could not be started.
    #[error("cannot start worker processes: {0}")]
    Workers(#[from] spindle_exec::Error),
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
}

/// A crawl, configured and ready to run.
pub struct Crawler {
    spider: Arc<dyn Spider>,
    settings: Arc<Settings>,
    resolved: HashMap<String, IpAddr>,
    exporter: Option<Box<dyn ItemExporter>>,
    progress: Arc<Progress>,
    shutdown: ShutdownHandle,
    launcher: Option<Launcher>,
    middlewares: Vec<Box<dyn DownloaderMiddleware>>,
    pipelines: Vec<Box<dyn ItemPipeline>>,
}

impl Crawler {
    /// A crawl of `spider` with `settings`, in this process.
    pub fn new(spider: impl Spider, settings: Settings) -> Self {
        Crawler {
            spider: Arc::new(spider),
            settings: Arc::new(settings),
            resolved: HashMap::new(),
            exporter: None,
            progress: Arc::default(),
            shutdown: ShutdownHandle::default(),
            launcher: None,
            middlewares: Vec::new(),
            pipelines: Vec::new(),
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
        for stage in &mut self.pipelines {
            stage.open().map_err(|error| CrawlError::Pipeline {
                name: stage.name().to_string(),
                error,
            })?;
        }
        let middlewares = builtin_middlewares(&self.settings)
            .into_iter()
            .chain(self.middlewares)
            .collect();
        let resolver = Arc::new(Resolver::with_fixed(self.resolved.clone()));
        let (events_tx, events) = mpsc::unbounded_channel();
        let executor = match self.launcher {
            Some(launcher) => {
                let tx = events_tx.clone();
                Executor::Workers(Box::new(Fleet::start(
                    launcher,
                    (*self.settings).clone(),
                    self.resolved.clone(),
                    move |event| {
                        let _ = tx.send(Event::Fleet(event));
                    },
                )?))
            }
            None => {
                let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
                Executor::InProcess {
                    downloader: Arc::new(Downloader::new(self.settings.clone(), resolver.clone())?),
                    parse_pool: rayon::ThreadPoolBuilder::new()
                        .num_threads(threads)
                        .thread_name(|i| format!("spindle-parse-{i}"))
                        .build()?,
                }
            }
        };
        let items = items::Items::start(self.pipelines, self.exporter, self.progress.clone());
        let mut engine = Engine {
            offsite: OffsiteFilter::new(self.spider.allowed_domains()),
            scheduler: Scheduler::new(SlotPolicies::from_settings(&self.settings)),
            spider: self.spider,
            settings: self.settings,
            resolver,
            executor,
            events_tx,
            items,
            middlewares,
            progress: self.progress,
            stats: Stats::default(),
            in_flight: 0,
            parse_backlog: 0,
            parses: 0,
            host_ips: HashMap::new(),
            awaiting_dns: HashMap::new(),
            offsite_domains: HashSet::new(),
            robots: HashMap::new(),
            rng: SmallRng::from_entropy(),
            closing: None,
            export_failed: false,
        };
        let started = (SystemTime::now(), Instant::now());
        let reason = engine.run(events, self.shutdown).await;
        let slots: BTreeMap<_, _> = engine
            .scheduler
            .slot_stats()
            .map(|(k, s)| (k.to_string(), s.clone()))
            .collect();
        let workers = engine
            .fleet()
            .map(|fleet| fleet.shutdown())
            .unwrap_or_default();
        let Engine {
            mut stats, items, ..
        } = engine;
        let (item_stats, written) = items.finish();
        stats.merge(&item_stats);
        let mut report = CrawlReport::new(&stats, started.0, started.1.elapsed(), &reason, slots);
        report.workers = workers;
        written.map_err(CrawlError::Export)?;
        Ok(report)
    }
}

/// `DEFAULT_REQUEST_HEADERS`, then cookies: what every crawl's requests pass first.
fn builtin_middlewares(settings: &Settings) -> Vec<Box<dyn DownloaderMiddleware>> {
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
        result: Box<Result<Response, (Request, DownloadError)>>,
    },
    Parsed {
        depth: u32,
        backlog: usize,
        result: Result<Output, String>,
    },
    Resolved {
        host: String,
        result: Result<IpAddr, DnsError>,
    },
}

struct Engine {
    spider: Arc<dyn Spider>,
    settings: Arc<Settings>,
    offsite: OffsiteFilter,
    scheduler: Scheduler,
    resolver: Arc<Resolver>,
    executor: Executor,
    events_tx: mpsc::UnboundedSender<Event>,
    items: items::Items,
    middlewares: Vec<Box<dyn DownloaderMiddleware>>,
    progress: Arc<Progress>,
    stats: Stats,
    in_flight: usize,
    parse_backlog: usize,
    parses: usize,
    /// Per-IP mode: the address each host's requests are keyed by.
    host_ips: HashMap<String, IpAddr>,
    /// Per-IP mode: requests held until their host is resolved.
    awaiting_dns: HashMap<String, Vec<Request>>,
    offsite_domains: HashSet<String>,
    /// robots.txt per origin, once asked for.
    robots: HashMap<String, RobotsState>,
    rng: SmallRng,
    closing: Option<String>,
    export_failed: bool,
}

/// Where downloads and parses run.
enum Executor {
    /// Downloads on this runtime, parses on a thread pool sized to the cores.
    InProcess {
        downloader: Arc<Downloader>,
        parse_pool: rayon::ThreadPool,
    },
    /// Multi-process mode: worker processes fetch and parse.
    Workers(Box<Fleet>),
}

impl Engine {
    fn fleet(&mut self) -> Option<&mut Fleet> {
        match &mut self.executor {
            Executor::Workers(fleet) => Some(fleet.as_mut()),
            Executor::InProcess { .. } => None,
        }
    }
}

enum RobotsState {
    /// Fetching; these requests wait for the answer.
    Pending(Vec<Request>),
    Ready(RobotsRules),
}
