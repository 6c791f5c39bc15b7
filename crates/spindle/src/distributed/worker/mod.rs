//! One worker of a distributed job: takes requests from Redis when their
//! slots allow, downloads and parses them here, and commits each page's
//! items and links in the step that finishes it.

mod admission;
mod responses;

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::conn::{Finish, JobConn, TakeArgs, Taken};
use super::{DistributedError, COMMAND_TIMEOUT};
use crate::downloader::dns::Resolver;
use crate::downloader::slot::SEND_MARGIN;
use crate::downloader::{DownloadError, Downloader};
use crate::engine::{CrawlError, ShutdownHandle};
use crate::middleware::{Action, DownloaderMiddleware};
use crate::offsite::OffsiteFilter;
use crate::request::{Purpose, Request};
use crate::response::Response;
use crate::robots::{self, RobotsRules};
use crate::scheduler::SlotPolicies;
use crate::settings::Settings;
use crate::spider::{Output, Spider};
use crate::stats::{CrawlReport, Progress, Stats};

/// The longest a worker waits before asking Redis again when nothing is
/// ready: other workers' finishes may make a slot ready at any time.
const POLL: Duration = Duration::from_millis(50);
/// Backoff after a failed Redis command: from the first to the last, doubling.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(5));
/// robots.txt requests go first in their slot.
const ROBOTS_PRIORITY: i32 = 1 << 20;

/// The parts of a crawl a worker runs with.
pub(crate) struct Parts {
    pub spider: Arc<dyn Spider>,
    pub settings: Arc<Settings>,
    pub resolved: HashMap<String, IpAddr>,
    pub middlewares: Vec<Box<dyn DownloaderMiddleware>>,
    pub progress: Arc<Progress>,
    pub shutdown: ShutdownHandle,
}

enum Event {
    Downloaded {
        id: u64,
        result: Box<Result<Response, (Request, DownloadError)>>,
    },
    Forbidden {
        id: u64,
    },
    /// Not sent (too late for its slot's gap, or taken before its
    /// robots.txt was known here): goes back to the frontier, counted in `why`.
    Returned {
        id: u64,
        bytes: Vec<u8>,
        why: &'static str,
    },
    Parsed {
        id: u64,
        depth: u32,
        result: Result<Output, String>,
    },
}

/// A request this worker holds under a lease.
struct Held {
    token: u64,
    slot: String,
}

/// robots.txt rules per origin, with the instant each answer was read from
/// Redis (the slot's Crawl-delay was in force there by then).
type RobotsCache = Arc<Mutex<HashMap<String, (Arc<RobotsRules>, Instant)>>>;

struct Worker {
    id: String,
    conn: JobConn,
    spider: Arc<dyn Spider>,
    settings: Arc<Settings>,
    policies: SlotPolicies,
    offsite: OffsiteFilter,
    resolver: Arc<Resolver>,
    downloader: Arc<Downloader>,
    middlewares: Vec<Box<dyn DownloaderMiddleware>>,
    progress: Arc<Progress>,
    stats: Stats,
    mw_stats: Stats,
    held: HashMap<u64, Held>,
    finishes: VecDeque<Finish>,
    robots_pushed: HashSet<String>,
    robots: RobotsCache,
    events: mpsc::UnboundedSender<Event>,
    /// When Redis failed last, and the backoff until the next try.
    down: Option<(Instant, Duration, Instant)>,
    lease_us: u64,
    closing: Option<String>,
}

/// Runs this process as one worker of the job in the settings, to the end of
/// the crawl (for every worker) or a shutdown.
pub(crate) async fn run(parts: Parts) -> Result<CrawlReport, CrawlError> {
    let settings = parts.settings.clone();
    let (url, job) = settings
        .distributed()
        .map_err(|e| DistributedError::Settings(e.to_string()))?
        .ok_or_else(|| DistributedError::Settings("REDIS_URL is not set".into()))?;
    let started = (SystemTime::now(), Instant::now());
    let worker_id = format!(
        "{}:{}:{:08x}",
        hostname(),
        std::process::id(),
        rand::random::<u32>()
    );
    let conn = connect(url, job, &parts.shutdown).await?;
    let Some(conn) = conn else {
        let report = CrawlReport::new(
            &Stats::default(),
            started.0,
            started.1.elapsed(),
            "shutdown",
            Default::default(),
        );
        return Ok(report);
    };
    info!(job, worker = %worker_id, redis = %url, "joined distributed job");
    let resolver = Arc::new(Resolver::new(parts.resolved.clone(), &settings));
    let downloader = Arc::new(Downloader::new(settings.clone(), resolver.clone())?);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut w = Worker {
        id: worker_id,
        conn,
        offsite: OffsiteFilter::new(parts.spider.allowed_domains()),
        spider: parts.spider,
        policies: SlotPolicies::from_settings(&settings),
        resolver,
        downloader,
        middlewares: crate::engine::builtin_middlewares(&settings, parts.middlewares),
        progress: parts.progress,
        stats: Stats::default(),
        mw_stats: Stats::default(),
        held: HashMap::new(),
        finishes: VecDeque::new(),
        robots_pushed: HashSet::new(),
        robots: RobotsCache::default(),
        events: tx,
        down: None,
        lease_us: settings.redis_lease.as_micros() as u64,
        closing: None,
        settings,
    };
    // Every worker seeds the start requests: the duplicate filter keeps one.
    let mut seeds = Vec::new();
    for request in w.spider.start_requests() {
        seeds.extend(w.admit(request, None).await);
    }
    loop {
        match w.conn.seed(&seeds).await {
            Ok(n) => {
                info!(new = n, given = seeds.len(), "start requests seeded");
                break;
            }
            // Not an outage (no password, a key of the job used by
            // something else...): retrying would not help; say so now.
            Err(e) if !is_outage(&e) && e.kind() != redis::ErrorKind::NoScriptError => {
                return Err(DistributedError::Redis(e).into());
            }
            Err(e) => {
                if w.redis_failed(&e) {
                    continue;
                }
            }
        }
        if let Some((_, _, next)) = w.down {
            tokio::time::sleep_until(next.into()).await;
        }
    }
    let reason = w.run_loop(&mut rx, &parts.shutdown).await;
    info!(reason = %reason, "worker closed");
    w.stats.inc_by(
        "distributed/redis_round_trips",
        w.conn.calls.load(std::sync::atomic::Ordering::Relaxed),
    );
    let mut stats = std::mem::take(&mut w.stats);
    stats.merge(&w.mw_stats);
    Ok(CrawlReport::new(
        &stats,
        started.0,
        started.1.elapsed(),
        &reason,
        Default::default(),
    ))
}

/// Connects, retrying with backoff while Redis cannot be reached; `None` on shutdown.
async fn connect(
    url: &str,
    job: &str,
    shutdown: &ShutdownHandle,
) -> Result<Option<JobConn>, DistributedError> {
    let mut backoff = BACKOFF.0;
    loop {
        match JobConn::connect(url, job, COMMAND_TIMEOUT).await {
            Ok(c) => return Ok(Some(c)),
            Err(DistributedError::Redis(e)) if is_outage(&e) => {
                warn!(error = %e, retry_in = ?backoff, "Redis unreachable; retrying");
            }
            Err(e) => return Err(e),
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.notified() => return Ok(None),
        }
        backoff = (backoff * 2).min(BACKOFF.1);
    }
}

fn is_outage(e: &redis::RedisError) -> bool {
    e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || matches!(
            e.kind(),
            redis::ErrorKind::BusyLoadingError | redis::ErrorKind::TryAgain
        )
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "host".into())
}

impl Worker {
    async fn run_loop(
        &mut self,
        rx: &mut mpsc::UnboundedReceiver<Event>,
        shutdown: &ShutdownHandle,
    ) -> String {
        let cr = self.settings.concurrent_requests.max(1);
        let renew_every = Duration::from_micros(self.lease_us / 3);
        let mut last_renew = Instant::now();
        let mut idle = 0u32;
        loop {
            let up = self.down.is_none_or(|(_, _, next)| Instant::now() >= next);
            let mut wait = POLL;
            // A worker with no free place and nothing to commit has nothing
            // to ask Redis until a download ends (or a renewal is due).
            let full = self.held.len() >= cr && self.finishes.is_empty();
            if full {
                wait = renew_every.saturating_sub(last_renew.elapsed());
            }
            if up && self.renew(&mut last_renew, renew_every).await && !full {
                if let Some((next, leases, took)) = self.step(cr).await {
                    if self.held.is_empty()
                        && self.finishes.is_empty()
                        && next.is_none()
                        && leases == 0
                    {
                        return "finished".into();
                    }
                    // Nothing to do here while other workers hold the
                    // slots: ask less often, up to 8 polls apart.
                    idle = if took { 0 } else { (idle + 1).min(3) };
                    if self.held.is_empty() {
                        wait = POLL * (1 << idle);
                    }
                    if let Some(us) = next {
                        wait = wait.min(Duration::from_micros(us));
                    }
                }
            }
            if let Some(reason) = &self.closing {
                if self.held.is_empty() && self.finishes.is_empty() {
                    return reason.clone();
                }
            }
            if let Some((_, _, next)) = self.down {
                wait = next.saturating_duration_since(Instant::now());
            }
            let deadline = tokio::time::Instant::now() + wait;
            tokio::select! {
                Some(event) = rx.recv() => {
                    self.handle(event).await;
                    while let Ok(event) = rx.try_recv() {
                        self.handle(event).await;
                    }
                }
                _ = tokio::time::sleep_until(deadline) => {}
                _ = shutdown.notified(), if self.closing.is_none() => {
                    info!("received shutdown: finishing the requests this worker holds");
                    self.closing = Some("shutdown".into());
                }
            }
        }
    }

    /// Renews this worker's leases when due, and first thing after an
    /// outage, so no other worker takes back what this one still holds.
    /// Returns false when Redis failed.
    async fn renew(&mut self, last_renew: &mut Instant, renew_every: Duration) -> bool {
        if self.down.is_none() && last_renew.elapsed() < renew_every {
            return true;
        }
        let held: Vec<(u64, u64)> = self.held.iter().map(|(id, h)| (*id, h.token)).collect();
        match self.conn.renew(&self.id, self.lease_us, &held).await {
            Ok(lost) => {
                self.redis_back();
                *last_renew = Instant::now();
                for id in lost {
                    // Taken back while this worker was away: another will
                    // fetch it, and this one's answer would be refused.
                    if self.held.remove(&id).is_some() {
                        warn!(id, "lease lost; the request went back to the frontier");
                        self.stats.inc("distributed/lease_lost");
                    }
                }
                self.finishes.retain(|f| self.held.contains_key(&f.id));
                true
            }
            Err(e) => {
                self.redis_failed(&e);
                false
            }
        }
    }

    /// One round trip: commits the finished requests, takes back expired
    /// leases, and takes what the slots allow, up to this worker's free
    /// places. Returns (µs until the next slot is ready, leases anywhere,
    /// whether anything was taken), or `None` when Redis failed.
    async fn step(&mut self, cr: usize) -> Option<(Option<u64>, u64, bool)> {
        let batch: Vec<Finish> = self.finishes.drain(..self.finishes.len().min(64)).collect();
        // The requests finished in this round trip are no longer held
        // after it, committed or refused: their places are free for the take.
        let free = if self.closing.is_some() {
            0
        } else {
            cr.saturating_sub(self.held.len().saturating_sub(batch.len()))
        };
        let take = TakeArgs {
            worker: &self.id,
            lease_us: self.lease_us,
            max: free,
            margin_us: SEND_MARGIN.as_micros() as u64,
            reap: 100,
        };
        let asked = Instant::now();
        match self.conn.finish_and_take(&batch, Some(take)).await {
            Ok((done, taken)) => {
                self.redis_back();
                for (f, committed) in batch.into_iter().zip(done) {
                    self.held.remove(&f.id);
                    if committed {
                        self.stats
                            .inc_by("item_scraped_count", f.items.len() as u64);
                        self.progress
                            .items
                            .fetch_add(f.items.len() as u64, std::sync::atomic::Ordering::Relaxed);
                    } else {
                        warn!(
                            id = f.id,
                            "finish refused: the lease had expired and another worker took the request"
                        );
                        self.stats.inc("distributed/finish_refused");
                    }
                }
                let taken = taken?;
                let took = !taken.taken.is_empty();
                for t in taken.taken {
                    self.start(t, asked);
                }
                Some((taken.wait_us, taken.leases, took))
            }
            Err(e) => {
                // Nothing is known to be committed: all of it is sent again
                // (a finish that did commit is then refused, harmlessly).
                for f in batch.into_iter().rev() {
                    self.finishes.push_front(f);
                }
                self.redis_failed(&e);
                None
            }
        }
    }

    /// Logs a failed Redis command and schedules the next try. Returns true
    /// when the command may be retried at once (Redis lost the script).
    fn redis_failed(&mut self, e: &redis::RedisError) -> bool {
        if e.kind() == redis::ErrorKind::NoScriptError {
            return true;
        }
        self.stats.inc("distributed/redis_errors");
        let now = Instant::now();
        let (since, backoff) = match self.down {
            None => {
                warn!(error = %e, "Redis unavailable: no new requests are taken; those held go on and wait to be committed");
                (now, BACKOFF.0)
            }
            Some((since, backoff, _)) => {
                debug!(error = %e, "Redis still unavailable");
                (since, (backoff * 2).min(BACKOFF.1))
            }
        };
        self.down = Some((since, backoff, now + backoff));
        false
    }

    fn redis_back(&mut self) {
        if let Some((since, _, _)) = self.down.take() {
            info!(after = ?since.elapsed(), "Redis is back; going on");
        }
    }

    /// Starts a request taken from the shared frontier. `asked` is when the
    /// take was sent: Redis timed the slot's gap at some instant after it.
    fn start(&mut self, taken: Taken, asked: Instant) {
        let Ok(mut request) = postcard::from_bytes::<Request>(&taken.bytes) else {
            warn!(id = taken.id, "a request in Redis cannot be read; dropped");
            self.held.insert(
                taken.id,
                Held {
                    token: taken.token,
                    slot: taken.slot,
                },
            );
            self.finishes.push_back(Finish {
                id: taken.id,
                token: taken.token,
                ..Finish::default()
            });
            return;
        };
        self.held.insert(
            taken.id,
            Held {
                token: taken.token,
                slot: taken.slot.clone(),
            },
        );
        let action =
            self.run_middlewares(&taken.slot, |mw, cx| mw.process_request(&mut request, cx));
        if !matches!(action.0, Action::Continue) {
            let pause = action.1;
            self.act(taken.id, request, action.0, pause);
            return;
        }
        self.stats.inc("downloader/request_count");
        self.progress
            .requests
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.progress
            .in_flight
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let id = taken.id;
        let downloader = self.downloader.clone();
        let events = self.events.clone();
        let wait_robots = (self.settings.robotstxt_obey && request.purpose == Purpose::Page)
            .then(|| (self.conn.clone(), self.robots.clone()));
        let agent = self.settings.user_agent.clone();
        // Redis spaced this request's start from the slot's previous one by
        // the delay plus the send margin, as of the take. Sent later than the
        // margin after the take was asked for (this process starved of CPU),
        // it could reach the site closer than the delay to the slot's next
        // request, taken meanwhile by another worker: then it goes back to
        // the frontier instead. So does a page taken before this worker knew
        // its origin's robots.txt: that answer may forbid it, or raise the
        // slot's delay (Crawl-delay) past the gap its take was given.
        let send_by = (taken.gap_us > 0).then_some(asked + SEND_MARGIN);
        let bytes = taken.bytes;
        tokio::spawn(async move {
            if let Some((conn, cache)) = wait_robots {
                let origin = robots::origin(&request.url);
                // Known before the take was asked for: the take then saw
                // the slot's delay as the answer set it.
                let known = cache
                    .lock()
                    .expect("robots cache")
                    .get(&origin)
                    .filter(|(_, read)| *read < asked)
                    .map(|(rules, _)| rules.clone());
                let Some(rules) = known else {
                    admission::robots_for(conn, cache, &request.url, &agent).await;
                    let _ = events.send(Event::Returned {
                        id,
                        bytes,
                        why: "distributed/robots_returned",
                    });
                    return;
                };
                if !rules.allows(&request.url) {
                    let _ = events.send(Event::Forbidden { id });
                    return;
                }
            }
            if send_by.is_some_and(|by| Instant::now() > by) {
                let _ = events.send(Event::Returned {
                    id,
                    bytes,
                    why: "distributed/late_returned",
                });
                return;
            }
            let result = downloader.fetch(request).await;
            let _ = events.send(Event::Downloaded {
                id,
                result: Box::new(result),
            });
        });
    }
}
