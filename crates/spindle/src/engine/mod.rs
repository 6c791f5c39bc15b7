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
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use rand::rngs::SmallRng;
use rand::SeedableRng;
use tokio::sync::{mpsc, Notify};
use tracing::{debug, info, warn};
use url::Url;

use crate::downloader::dns::{DnsError, Resolver};
use crate::downloader::{DownloadError, Downloader};
use crate::exporter::ItemExporter;
use crate::item::Item;
use crate::offsite::OffsiteFilter;
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
mod remote;
mod responses;

const PARSE_BACKLOG_BYTES: usize = 5_000_000;

#[derive(Debug, thiserror::Error)]
pub enum CrawlError {
    #[error("cannot build the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
    #[error("cannot start the parse threads: {0}")]
    ParsePool(#[from] rayon::ThreadPoolBuildError),
    #[error("writing items failed: {0}")]
    Export(std::io::Error),
    #[error("cannot serialize the spider for worker processes: {0}")]
    SpiderConfig(#[from] serde_json::Error),
    #[error("cannot start worker processes: {0}")]
    Workers(#[from] spindle_exec::Error),
}

/// Asks a running crawl to stop gracefully: no new requests, in-flight ones finish.
#[derive(Clone, Default)]
pub struct ShutdownHandle(Arc<Notify>);

impl ShutdownHandle {
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
}

impl Crawler {
    pub fn new(spider: impl Spider, settings: Settings) -> Self {
        Crawler {
            spider: Arc::new(spider),
            settings: Arc::new(settings),
            resolved: HashMap::new(),
            exporter: None,
            progress: Arc::default(),
            shutdown: ShutdownHandle::default(),
            launcher: None,
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

    pub fn progress(&self) -> Arc<Progress> {
        self.progress.clone()
    }

    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.shutdown.clone()
    }

    /// Runs the crawl to its end and reports its stats. Must be called inside a tokio runtime.
    pub async fn run(self) -> Result<CrawlReport, CrawlError> {
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
        let (items, writer) = spawn_writer(self.exporter);
        let mut engine = Engine {
            offsite: OffsiteFilter::new(self.spider.allowed_domains()),
            scheduler: Scheduler::new(SlotPolicies::from_settings(&self.settings)),
            spider: self.spider,
            settings: self.settings,
            resolver,
            executor,
            events_tx,
            items,
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
        let mut report = CrawlReport::new(
            &engine.stats,
            started.0,
            started.1.elapsed(),
            &reason,
            slots,
        );
        report.workers = workers;
        drop(engine);
        match writer.join() {
            Ok(Ok(())) => Ok(report),
            Ok(Err(e)) => Err(CrawlError::Export(e)),
            Err(_) => Err(CrawlError::Export(std::io::Error::other(
                "item writer panicked",
            ))),
        }
    }
}

/// Items are written on a thread of their own; it flushes whenever it has
/// caught up, so the file is valid and current without a flush per item.
fn spawn_writer(
    exporter: Option<Box<dyn ItemExporter>>,
) -> (
    Option<std_mpsc::Sender<Item>>,
    JoinHandle<std::io::Result<()>>,
) {
    let Some(mut exporter) = exporter else {
        return (None, std::thread::spawn(|| Ok(())));
    };
    let (tx, rx) = std_mpsc::channel::<Item>();
    let handle = std::thread::Builder::new()
        .name("spindle-export".into())
        .spawn(move || {
            exporter.flush()?;
            while let Ok(item) = rx.recv() {
                let _whole_batch = crate::exporter::lock_writes();
                exporter.export(&item)?;
                while let Ok(item) = rx.try_recv() {
                    exporter.export(&item)?;
                }
                exporter.flush()?;
            }
            exporter.flush()
        })
        .expect("spawn the item writer thread");
    (Some(tx), handle)
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
    items: Option<std_mpsc::Sender<Item>>,
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
