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

/// Bytes of downloaded bodies allowed to wait for parsing before the engine
/// stops starting downloads (Scrapy's `SCRAPER_SLOT_MAX_ACTIVE_SIZE`; each
/// response counts at least 1 KiB, as there).
const PARSE_BACKLOG_BYTES: usize = 5_000_000;

#[derive(Debug, thiserror::Error)]
pub enum CrawlError {
    #[error("cannot build the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
    #[error("cannot start the parse threads: {0}")]
    ParsePool(#[from] rayon::ThreadPoolBuildError),
    #[error("writing items failed: {0}")]
    Export(std::io::Error),
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
        }
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
        let resolver = Arc::new(Resolver::with_fixed(self.resolved));
        let downloader = Arc::new(Downloader::new(self.settings.clone(), resolver.clone())?);
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        let parse_pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("spindle-parse-{i}"))
            .build()?;
        let (events_tx, events) = mpsc::unbounded_channel();
        let (items, writer) = spawn_writer(self.exporter);
        let mut engine = Engine {
            offsite: OffsiteFilter::new(self.spider.allowed_domains()),
            scheduler: Scheduler::new(SlotPolicies::from_settings(&self.settings)),
            spider: self.spider,
            settings: self.settings,
            resolver,
            downloader,
            parse_pool,
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
        let report = CrawlReport::new(
            &engine.stats,
            started.0,
            started.1.elapsed(),
            &reason,
            slots,
        );
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

enum Event {
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
    downloader: Arc<Downloader>,
    parse_pool: rayon::ThreadPool,
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

enum RobotsState {
    /// Fetching; these requests wait for the answer.
    Pending(Vec<Request>),
    Ready(RobotsRules),
}

impl Engine {
    async fn run(
        &mut self,
        mut events: mpsc::UnboundedReceiver<Event>,
        shutdown: ShutdownHandle,
    ) -> String {
        info!(spider = self.spider.name(), "spider opened");
        for request in self.spider.start_requests() {
            self.schedule(request);
        }
        let interval = self.settings.logstats_interval;
        let mut logstats = (!interval.is_zero()).then(|| {
            let mut t = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            t
        });
        let mut last_logged = (0u64, 0u64);
        let timeout = self.settings.closespider_timeout;
        let close_timer = tokio::time::sleep(if timeout.is_zero() {
            Duration::MAX / 4
        } else {
            timeout
        });
        tokio::pin!(close_timer);

        loop {
            self.dispatch();
            self.publish_progress();
            if self.is_done() {
                break;
            }
            let wakeup = self
                .scheduler
                .next_wakeup()
                .map(tokio::time::Instant::from_std);
            tokio::select! {
                Some(event) = events.recv() => {
                    self.handle(event);
                    while let Ok(event) = events.try_recv() {
                        self.handle(event);
                    }
                }
                _ = sleep_until_opt(wakeup), if wakeup.is_some() && self.closing.is_none() => {}
                _ = tick_opt(&mut logstats) => {
                    last_logged = self.log_stats(last_logged, interval);
                }
                _ = &mut close_timer, if !timeout.is_zero() && self.closing.is_none() => {
                    self.close("closespider_timeout");
                }
                _ = shutdown.0.notified(), if self.closing.is_none() => {
                    info!("received shutdown: finishing the requests in flight");
                    self.close("shutdown");
                }
            }
        }
        let reason = self
            .closing
            .take()
            .unwrap_or_else(|| "finished".to_string());
        info!(reason = %reason, "spider closed");
        reason
    }

    fn is_done(&self) -> bool {
        let busy = self.in_flight > 0 || self.parses > 0;
        if self.closing.is_some() {
            return !busy;
        }
        !busy && self.scheduler.is_empty() && self.awaiting_dns.is_empty()
    }

    fn close(&mut self, reason: &str) {
        if self.closing.is_none() {
            info!(reason, "closing spider");
            self.closing = Some(reason.to_string());
        }
    }

    /// Starts every request the caps, delays and parse backlog allow right now.
    fn dispatch(&mut self) {
        if self.closing.is_some() {
            return;
        }
        let cap = self.settings.concurrent_requests;
        let now = Instant::now();
        while (cap == 0 || self.in_flight < cap) && self.parse_backlog < PARSE_BACKLOG_BYTES {
            let Some(Dispatch {
                slot,
                request,
                pacing,
            }) = self.scheduler.pop(now)
            else {
                break;
            };
            self.in_flight += 1;
            self.stats.inc("scheduler/dequeued");
            self.stats.inc("downloader/request_count");
            self.stats.inc("downloader/request_method_count/GET");
            let downloader = self.downloader.clone();
            let tx = self.events_tx.clone();
            tokio::spawn(async move {
                pacing.pass().await;
                let result = downloader.fetch(request).await;
                let _ = tx.send(Event::Downloaded {
                    slot,
                    result: Box::new(result),
                });
            });
        }
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Downloaded { slot, result } => {
                self.in_flight -= 1;
                self.scheduler.finish(slot, Instant::now());
                match *result {
                    Ok(response) => self.on_downloaded(slot, response),
                    Err((request, error)) => self.on_download_error(slot, request, error),
                }
            }
            Event::Parsed {
                depth,
                backlog,
                result,
            } => {
                self.parses -= 1;
                self.parse_backlog -= backlog;
                match result {
                    Ok(output) => self.on_output(depth, output),
                    Err(error) => {
                        warn!(%error, "spider error");
                        self.stats.inc("spider_exceptions/count");
                    }
                }
            }
            Event::Resolved { host, result } => {
                let waiting = self.awaiting_dns.remove(&host).unwrap_or_default();
                match result {
                    Ok(ip) => {
                        self.host_ips.insert(host, ip);
                        let now = Instant::now();
                        let key = ip.to_string();
                        for request in waiting {
                            self.scheduler.push(&key, request, now);
                        }
                    }
                    Err(error) => {
                        warn!(%error, requests = waiting.len(), "dropping requests");
                        self.stats
                            .inc_by("downloader/exception_count", waiting.len() as u64);
                        self.stats.inc_by(
                            "downloader/exception_type_count/DNSLookupError",
                            waiting.len() as u64,
                        );
                        for request in waiting {
                            if let Purpose::Robots { origin } = request.purpose {
                                self.robots_ready(&origin, RobotsRules::DisallowAll);
                            }
                        }
                    }
                }
            }
        }
    }

    fn on_downloaded(&mut self, slot: SlotId, response: Response) {
        let status = response.status;
        self.stats.inc("downloader/response_count");
        self.stats
            .inc(&format!("downloader/response_status_count/{status}"));
        self.stats
            .inc_by("downloader/response_bytes", response.body.len() as u64);
        self.stats.inc("response_received_count");
        debug!(url = %response.url, status, "crawled");
        let warnsize = self.settings.download_warnsize;
        if warnsize > 0 && response.body.len() as u64 > warnsize {
            warn!(url = %response.url, bytes = response.body.len(), "body larger than DOWNLOAD_WARNSIZE");
            self.stats.inc("downloader/warnsize_count");
        }
        let pagecount = self.settings.closespider_pagecount;
        if pagecount > 0 && self.stats.get("response_received_count") >= pagecount {
            self.close("closespider_pagecount");
        }

        // A 429 or 503 that says when to come back pauses its slot, retried or not.
        let now = Instant::now();
        let told_to_wait =
            retry::retry_after(status, &response.headers, &self.settings, SystemTime::now());
        if let Some(wait) = told_to_wait {
            info!(
                slot = self.scheduler.slot_key(slot),
                ?wait,
                status,
                "Retry-After: pausing the slot"
            );
            self.stats.inc("retry/retry_after_count");
            self.scheduler.pause(slot, now + wait, now);
        }
        if self.settings.retry_http_codes.contains(&status)
            && self.retry(
                slot,
                &response.request,
                &status.to_string(),
                told_to_wait.is_some(),
            )
        {
            return;
        }

        if (300..400).contains(&status) {
            if let Some(target) = redirect_target(&response) {
                self.follow_redirect(response.request, target);
                return;
            }
        }
        if let Purpose::Robots { origin } = &response.request.purpose {
            self.stats.inc("robotstxt/response_count");
            self.stats
                .inc(&format!("robotstxt/response_status_count/{status}"));
            let rules =
                RobotsRules::from_response(status, &response.body, &self.settings.user_agent);
            let origin = origin.clone();
            self.robots_ready(&origin, rules);
            return;
        }
        if !(200..300).contains(&status) {
            self.stats.inc("httperror/response_ignored_count");
            self.stats
                .inc(&format!("httperror/response_ignored_status_count/{status}"));
            return;
        }
        let backlog = response.body.len().max(1024);
        self.parse_backlog += backlog;
        self.parses += 1;
        let spider = self.spider.clone();
        let tx = self.events_tx.clone();
        let depth = response.depth();
        self.parse_pool.spawn(move || {
            let result = std::panic::catch_unwind(AssertUnwindSafe(|| spider.parse(&response)));
            let result = match result {
                Ok(Ok(output)) => Ok(output),
                Ok(Err(e)) => Err(format!("{} on {}", e, response.url)),
                Err(panic) => Err(format!(
                    "parse panicked on {}: {}",
                    response.url,
                    panic_message(&panic)
                )),
            };
            let _ = tx.send(Event::Parsed {
                depth,
                backlog,
                result,
            });
        });
    }

    fn on_download_error(&mut self, slot: SlotId, request: Request, error: DownloadError) {
        self.stats.inc("downloader/exception_count");
        self.stats
            .inc(&format!("downloader/exception_type_count/{}", error.kind()));
        if error.is_retryable() && self.retry(slot, &request, error.kind(), false) {
            return;
        }
        warn!(url = %request.url, %error, "download failed");
        if let Purpose::Robots { origin } = request.purpose {
            // RFC 9309: an unreachable robots.txt means complete disallow.
            self.stats.inc("robotstxt/unreachable");
            self.robots_ready(&origin, RobotsRules::DisallowAll);
        }
    }

    /// Queues the request again in its slot after pausing the slot, unless
    /// retries are off or used up. Returns whether it was retried.
    fn retry(
        &mut self,
        slot: SlotId,
        request: &Request,
        reason: &str,
        already_paused: bool,
    ) -> bool {
        if !self.settings.retry_enabled || self.closing.is_some() {
            return false;
        }
        if request.retries >= self.settings.retry_times {
            warn!(url = %request.url, retries = request.retries, reason, "gave up retrying");
            self.stats.inc("retry/max_reached");
            return false;
        }
        let mut again = request.clone();
        again.retries += 1;
        again.priority -= 1;
        self.stats.inc("retry/count");
        self.stats.inc("scheduler/enqueued");
        self.stats.inc(&format!("retry/reason_count/{reason}"));
        let now = Instant::now();
        if !already_paused {
            let pause = retry::backoff(&self.settings, again.retries, &mut self.rng);
            debug!(url = %request.url, ?pause, reason, "retrying after a pause of the slot");
            self.scheduler.pause(slot, now + pause, now);
        }
        let key = self.scheduler.slot_key(slot).to_string();
        self.scheduler.push(&key, again, now);
        true
    }

    fn follow_redirect(&mut self, from: Request, target: Url) {
        let robots = matches!(from.purpose, Purpose::Robots { .. });
        let refuse = if from.redirects >= self.settings.redirect_max_times {
            debug!(url = %from.url, "discarding: max redirections reached");
            Some("redirect/max_reached")
        } else if crate::request::check_crawlable(&target).is_err() {
            Some("redirect/unsupported_scheme")
        } else if !robots && !self.offsite.allows(&target) {
            self.count_offsite(&target);
            Some("redirect/offsite")
        } else {
            None
        };
        if let Some(stat) = refuse {
            self.stats.inc(stat);
            if let Purpose::Robots { origin } = from.purpose {
                // RFC 9309: a robots.txt that cannot be reached by redirects counts as missing.
                self.robots_ready(&origin, RobotsRules::AllowAll);
            }
            return;
        }
        let mut next = Request::new(target);
        next.depth = from.depth;
        next.priority = from.priority + 2;
        next.redirects = from.redirects + 1;
        next.dont_filter = from.dont_filter;
        next.purpose = from.purpose;
        self.schedule(next);
    }

    /// An origin's robots.txt is known: apply its Crawl-delay, then release or
    /// drop the requests that waited for it.
    fn robots_ready(&mut self, origin: &str, rules: RobotsRules) {
        if let Some(delay) = rules.crawl_delay() {
            let delay = delay.min(self.settings.robotstxt_crawl_delay_max);
            if let Some(host) = Url::parse(origin)
                .ok()
                .and_then(|u| u.host_str().map(str::to_string))
            {
                let key = match self.host_ips.get(&host) {
                    Some(ip) if self.settings.concurrent_requests_per_ip > 0 => ip.to_string(),
                    _ => host,
                };
                info!(slot = %key, ?delay, "robots.txt Crawl-delay applied");
                let now = Instant::now();
                let id = self.scheduler.slot(&key);
                self.scheduler.set_delay_floor(id, delay, now);
            }
        }
        let waiting = match self.robots.remove(origin) {
            Some(RobotsState::Pending(waiting)) => waiting,
            _ => Vec::new(),
        };
        for request in waiting {
            if rules.allows(&request.url) {
                self.enqueue(request);
            } else {
                self.stats.inc("robotstxt/forbidden");
            }
        }
        self.robots
            .insert(origin.to_string(), RobotsState::Ready(rules));
    }

    fn on_output(&mut self, parent_depth: u32, output: Output) {
        for item in output.items {
            self.stats.inc("item_scraped_count");
            if let Some(tx) = &self.items {
                if tx.send(item).is_err() && !self.export_failed {
                    self.export_failed = true;
                    self.close("export_error");
                }
            }
        }
        for (key, n) in output.stats {
            self.stats.inc_by(key, n);
        }
        if self.closing.is_some() {
            return;
        }
        let depth = parent_depth + 1;
        let limit = self.settings.depth_limit;
        for mut request in output.requests {
            if limit > 0 && depth > limit {
                self.stats.inc("depth_limit/filtered");
                continue;
            }
            if !self.offsite.allows(&request.url) {
                self.count_offsite(&request.url);
                continue;
            }
            request.depth = depth;
            self.schedule(request);
        }
    }

    fn count_offsite(&mut self, url: &Url) {
        self.stats.inc("offsite/filtered");
        if let Some(host) = url.host_str() {
            if self.offsite_domains.insert(host.to_string()) {
                self.stats.inc("offsite/domains");
            }
        }
    }

    /// Admits a request through the duplicate filter and robots.txt, then queues it in its slot.
    fn schedule(&mut self, request: Request) {
        if !self.scheduler.admit(&request) {
            self.stats.inc("dupefilter/filtered");
            return;
        }
        self.stats.inc("scheduler/enqueued");
        self.stats
            .max("request_depth_max", u64::from(request.depth));
        if self.settings.robotstxt_obey && request.purpose == Purpose::Page {
            let origin = robots::origin(&request.url);
            match self.robots.get_mut(&origin) {
                Some(RobotsState::Ready(rules)) => {
                    if !rules.allows(&request.url) {
                        self.stats.inc("robotstxt/forbidden");
                        return;
                    }
                }
                Some(RobotsState::Pending(waiting)) => {
                    waiting.push(request);
                    return;
                }
                None => {
                    // The first request to an origin waits for its robots.txt,
                    // which goes through the same slot, caps and delay.
                    let mut fetch = Request::new(robots::robots_url(&request.url));
                    fetch.priority = 1000;
                    fetch.dont_filter = true;
                    fetch.purpose = Purpose::Robots {
                        origin: origin.clone(),
                    };
                    self.robots
                        .insert(origin, RobotsState::Pending(vec![request]));
                    self.stats.inc("robotstxt/request_count");
                    self.enqueue(fetch);
                    return;
                }
            }
        }
        self.enqueue(request);
    }

    /// Queues an admitted request in its slot: the named slot, the host, or in
    /// per-IP mode the host's address (resolving it first).
    fn enqueue(&mut self, request: Request) {
        let host = request
            .url
            .host_str()
            .unwrap_or_default()
            .to_ascii_lowercase();
        if request.slot.is_some() || self.settings.concurrent_requests_per_ip == 0 {
            let key = request.slot.clone().unwrap_or(host);
            self.scheduler.push(&key, request, Instant::now());
            return;
        }
        // Per-IP slots: the key is the address, known before the first request
        // goes out, so hosts sharing an address share a slot from the start.
        if let Some(ip) = self.host_ips.get(&host) {
            let key = ip.to_string();
            self.scheduler.push(&key, request, Instant::now());
            return;
        }
        let waiting = self.awaiting_dns.entry(host.clone()).or_default();
        waiting.push(request);
        if waiting.len() == 1 {
            let resolver = self.resolver.clone();
            let tx = self.events_tx.clone();
            tokio::spawn(async move {
                let result = resolver.lookup(&host).await.map(|ips| ips[0]);
                let _ = tx.send(Event::Resolved { host, result });
            });
        }
    }

    fn publish_progress(&self) {
        let p = &self.progress;
        Progress::set(&p.pages, self.stats.get("response_received_count"));
        Progress::set(&p.items, self.stats.get("item_scraped_count"));
        Progress::set(&p.requests, self.stats.get("downloader/request_count"));
        Progress::set(&p.in_flight, self.in_flight as u64);
        Progress::set(&p.queued, self.scheduler.len() as u64);
        Progress::set(&p.failed, self.stats.get("downloader/exception_count"));
    }

    /// Scrapy's LogStats line; returns the counts it logged.
    fn log_stats(
        &self,
        (pages_before, items_before): (u64, u64),
        interval: Duration,
    ) -> (u64, u64) {
        let pages = self.stats.get("response_received_count");
        let items = self.stats.get("item_scraped_count");
        let per_min = 60.0 / interval.as_secs_f64();
        info!(
            "Crawled {} pages (at {:.0} pages/min), scraped {} items (at {:.0} items/min)",
            pages,
            (pages - pages_before) as f64 * per_min,
            items,
            (items - items_before) as f64 * per_min
        );
        (pages, items)
    }
}

fn redirect_target(response: &Response) -> Option<Url> {
    let location = response
        .headers
        .get(reqwest::header::LOCATION)?
        .to_str()
        .ok()?;
    response.url.join(location.trim()).ok()
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_string())
}

async fn sleep_until_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn tick_opt(interval: &mut Option<tokio::time::Interval>) {
    match interval {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}
