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
mod items;
mod remote;
mod responses;
mod scraper;

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use tokio::sync::{mpsc, Notify};

use crate::downloader::dns::{DnsError, Resolver};
use crate::downloader::{DownloadError, Downloader};
use crate::exporter::ItemExporter;
use crate::middleware::{self, DownloaderMiddleware};
use crate::pipeline::{ItemPipeline, PipelineError};
use crate::request::Request;
use crate::response::Response;
use crate::scheduler::{Scheduler, SlotId, SlotPolicies};
use crate::settings::Settings;
use crate::spider::{Output, Spider};
use crate::stats::{CrawlReport, Progress, Stats};
use crate::workers::{Fleet, FleetEvent, Launcher};
use admission::{Admission, Source};
use downloads::{Downloads, Executor};
use scraper::Scraper;

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
        let settings = self.settings;
        let middlewares = builtin_middlewares(&settings, self.middlewares);
        let resolver = Arc::new(Resolver::with_fixed(self.resolved.clone()));
        let (events_tx, events) = mpsc::unbounded_channel();
        let (executor, parse_pool) = match self.launcher {
            Some(launcher) => {
                let tx = events_tx.clone();
                let fleet = Fleet::start(
                    launcher,
                    (*settings).clone(),
                    self.resolved.clone(),
                    move |event| {
                        let _ = tx.send(Event::Fleet(event));
                    },
                )?;
                (Executor::Workers(Box::new(fleet)), None)
            }
            None => {
                let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
                let downloader = Downloader::new(settings.clone(), resolver.clone())?;
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .thread_name(|i| format!("spindle-parse-{i}"))
                    .build()?;
                (Executor::InProcess(Arc::new(downloader)), Some(pool))
            }
        };
        let mut engine = Engine {
            admission: Admission::new(&settings, self.spider.allowed_domains(), resolver),
            scheduler: Scheduler::new(SlotPolicies::from_settings(&settings)),
            downloads: Downloads::new(
                executor,
                settings.concurrent_requests,
                settings.download_warnsize,
            ),
            scraper: Scraper::new(self.spider.clone(), parse_pool),
            items: items::Items::start(self.pipelines, self.exporter, self.progress.clone()),
            middlewares,
            mw_stats: Stats::default(),
            spider: self.spider,
            settings,
            events_tx,
            progress: self.progress,
            closing: None,
            export_failed: false,
            pages_received: 0,
        };
        let started = (SystemTime::now(), Instant::now());
        let reason = engine.run(events, self.shutdown).await;
        let slots: BTreeMap<_, _> = engine
            .scheduler
            .slot_stats()
            .map(|(k, s)| (k.to_string(), s.clone()))
            .collect();
        let workers = engine
            .downloads
            .fleet()
            .map(|fleet| fleet.shutdown())
            .unwrap_or_default();
        // Each part kept its own counters; the report is their sum.
        let (item_stats, written) = engine.items.finish();
        let mut stats = Stats::default();
        for part in [
            &engine.scheduler.stats,
            &engine.downloads.stats,
            &engine.scraper.stats,
            &engine.admission.stats,
            &engine.mw_stats,
            &item_stats,
        ] {
            stats.merge(part);
        }
        let mut report = CrawlReport::new(&stats, started.0, started.1.elapsed(), &reason, slots);
        report.workers = workers;
        written.map_err(CrawlError::Export)?;
        Ok(report)
    }
}

/// The crawl's own middlewares around the user's: default headers and
/// cookies before them, retries, redirects and the non-2xx filter after.
fn builtin_middlewares(
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
    /// Pipelines and the exporter, on their own thread.
    items: items::Items,
    middlewares: Vec<Box<dyn DownloaderMiddleware>>,
    /// The counters the middlewares keep (through their `Context`).
    mw_stats: Stats,
    events_tx: mpsc::UnboundedSender<Event>,
    progress: Arc<Progress>,
    closing: Option<String>,
    export_failed: bool,
    /// Page responses, robots.txt left out (for `CLOSESPIDER_PAGECOUNT`).
    pages_received: u64,
}
