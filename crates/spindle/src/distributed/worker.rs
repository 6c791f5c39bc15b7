//! One worker of a distributed job: takes requests from Redis when their
//! slots allow, downloads and parses them here, and commits each page's
//! items and links in the step that finishes it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::conn::{Finish, JobConn, Push, TakeArgs, Taken};
use super::{DistributedError, COMMAND_TIMEOUT};
use crate::downloader::dns::Resolver;
use crate::downloader::slot::SEND_MARGIN;
use crate::downloader::{DownloadError, Downloader};
use crate::engine::{CrawlError, ShutdownHandle};
use crate::middleware::{Action, Context, DownloaderMiddleware};
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
                    robots_for(conn, cache, &request.url, &agent).await;
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

    /// Runs one hook of each middleware in order until one decides; returns
    /// the decision and any slot pause asked for.
    fn run_middlewares(
        &mut self,
        slot: &str,
        mut hook: impl FnMut(&mut dyn DownloaderMiddleware, &mut Context<'_>) -> Action,
    ) -> (Action, Option<Duration>) {
        let mut cx = Context::new(&mut self.mw_stats, slot, self.closing.is_some());
        let mut action = Action::Continue;
        for mw in &mut self.middlewares {
            action = hook(mw.as_mut(), &mut cx);
            if action != Action::Continue {
                break;
            }
        }
        let pause = cx.take_pause();
        (action, pause)
    }

    /// Carries out a middleware's decision on a held request.
    fn act(&mut self, id: u64, request: Request, action: Action, pause: Option<Duration>) {
        let Some(held) = self.held.get(&id) else {
            return;
        };
        let mut finish = Finish {
            id,
            token: held.token,
            pause_us: pause.map_or(0, |d| d.as_micros() as u64),
            ..Finish::default()
        };
        match action {
            Action::Continue | Action::Drop => {
                if let Some(origin) = request.robots_origin() {
                    // As the one-process engine: a robots.txt that cannot be had allows all.
                    finish.robots = Some((origin.to_string(), b"404\n".to_vec(), 0));
                }
            }
            Action::Retry(again) => match postcard::to_allocvec(&again) {
                Ok(bytes) => finish.retry = Some(bytes),
                Err(e) => warn!(error = %e, "cannot serialize a retry; dropped"),
            },
            Action::Follow(next) => {
                // A redirect: admitted like a link (offsite, duplicates).
                let depth = request.depth;
                let mut next = next;
                next.depth = depth;
                let pushes = self.admit_sync(next, None);
                finish.pushes = pushes;
            }
        }
        self.finishes.push_back(finish);
    }

    async fn handle(&mut self, event: Event) {
        match event {
            Event::Returned { id, bytes, why } => {
                self.progress
                    .in_flight
                    .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                self.stats.inc(why);
                debug!(id, why, "not sent; returned to the frontier");
                if let Some(held) = self.held.get(&id) {
                    self.finishes.push_back(Finish {
                        id,
                        token: held.token,
                        retry: Some(bytes),
                        ..Finish::default()
                    });
                }
            }
            Event::Forbidden { id } => {
                self.progress
                    .in_flight
                    .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                self.stats.inc("robotstxt/forbidden");
                if let Some(held) = self.held.get(&id) {
                    self.finishes.push_back(Finish {
                        id,
                        token: held.token,
                        ..Finish::default()
                    });
                }
            }
            Event::Downloaded { id, result } => {
                self.progress
                    .in_flight
                    .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                let Some(slot) = self.held.get(&id).map(|h| h.slot.clone()) else {
                    return;
                };
                match *result {
                    Ok(mut response) => {
                        self.stats.inc("response_received_count");
                        self.stats.inc(&format!(
                            "downloader/response_status_count/{}",
                            response.status
                        ));
                        if response.request.robots_origin().is_none() {
                            self.progress
                                .pages
                                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        let (action, pause) = self.run_middlewares(&slot, |mw, cx| {
                            mw.process_response(&mut response, cx)
                        });
                        if action != Action::Continue {
                            let request = response.request.clone();
                            self.act(id, request, action, pause);
                            return;
                        }
                        if let Some(origin) = response.request.robots_origin() {
                            self.robots_answered(id, origin.to_string(), &response, pause);
                            return;
                        }
                        let spider = self.spider.clone();
                        let events = self.events.clone();
                        let depth = response.depth();
                        tokio::task::spawn_blocking(move || {
                            let result =
                                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                                    spider.parse(&response)
                                }));
                            let result = match result {
                                Ok(Ok(output)) => Ok(output),
                                Ok(Err(e)) => Err(e.to_string()),
                                Err(panic) => Err(crate::engine::panic_message(&panic)),
                            };
                            let _ = events.send(Event::Parsed { id, depth, result });
                        });
                    }
                    Err((request, error)) => {
                        self.stats
                            .inc(&format!("downloader/exception_type_count/{}", error.kind()));
                        let (action, pause) = self.run_middlewares(&slot, |mw, cx| {
                            mw.process_exception(&request, &error, cx)
                        });
                        if action == Action::Continue {
                            warn!(url = %request.url, error = %error, "download failed");
                        }
                        self.act(id, request, action, pause);
                    }
                }
            }
            Event::Parsed { id, depth, result } => {
                let Some(held) = self.held.get(&id) else {
                    return;
                };
                let mut finish = Finish {
                    id,
                    token: held.token,
                    page: true,
                    ..Finish::default()
                };
                match result {
                    Ok(output) => {
                        for item in &output.items {
                            match serde_json::to_string(item) {
                                Ok(text) => finish.items.push(text),
                                Err(e) => warn!(error = %e, "item cannot be serialized; dropped"),
                            }
                        }
                        for (key, n) in output.stats {
                            self.stats.inc_by(key, n);
                        }
                        for request in output.requests {
                            let pushes = self.admit(request, Some(depth)).await;
                            finish.pushes.extend(pushes);
                        }
                    }
                    Err(e) => {
                        warn!(error = %e, "spider error");
                        self.stats.inc("spider_exceptions/count");
                    }
                }
                self.finishes.push_back(finish);
            }
        }
    }

    fn robots_answered(
        &mut self,
        id: u64,
        origin: String,
        response: &Response,
        pause: Option<Duration>,
    ) {
        self.stats.inc("robotstxt/response_count");
        let rules =
            RobotsRules::from_response(response.status, &response.body, &self.settings.user_agent);
        let delay = rules
            .crawl_delay()
            .map(|d| d.min(self.settings.robotstxt_crawl_delay_max));
        if let Some(delay) = delay {
            info!(origin = %origin, ?delay, "robots.txt Crawl-delay applied");
        }
        let mut answer = format!("{}\n", response.status).into_bytes();
        answer.extend_from_slice(&response.body);
        let Some(held) = self.held.get(&id) else {
            return;
        };
        self.finishes.push_back(Finish {
            id,
            token: held.token,
            pause_us: pause.map_or(0, |d| d.as_micros() as u64),
            robots: Some((origin, answer, delay.map_or(0, |d| d.as_micros() as u64))),
            ..Finish::default()
        });
    }

    /// The filters a new request passes (crawlable URL, offsite, depth), its
    /// slot, and the robots.txt request its origin needs first; what to push.
    /// `parent` is the depth of the page it came from (`None`: a start request).
    async fn admit(&mut self, mut request: Request, parent: Option<u32>) -> Vec<Push> {
        if parent.is_some()
            && self.settings.concurrent_requests_per_ip > 0
            && request.slot.is_none()
        {
            // Per-IP slots: the key is the host's address, resolved here.
            let host = request.url.host_str().unwrap_or_default().to_string();
            match self.resolver.lookup(&host).await {
                Ok(ips) if !ips.is_empty() => request.slot = Some(ip_slot(ips[0])),
                Ok(_) => {}
                Err(e) => {
                    warn!(host = %host, error = %e, "DNS lookup failed; request dropped");
                    self.stats.inc("distributed/dns_error");
                    return Vec::new();
                }
            }
        } else if parent.is_none()
            && self.settings.concurrent_requests_per_ip > 0
            && request.slot.is_none()
        {
            let host = request.url.host_str().unwrap_or_default().to_string();
            if let Ok(ips) = self.resolver.lookup(&host).await {
                if let Some(ip) = ips.first() {
                    request.slot = Some(ip_slot(*ip));
                }
            }
        }
        self.admit_sync(request, parent)
    }

    fn admit_sync(&mut self, mut request: Request, parent: Option<u32>) -> Vec<Push> {
        if crate::request::check_crawlable(&request.url).is_err() {
            return Vec::new();
        }
        if let Some(depth) = parent {
            request.depth = depth + 1;
            if !self.offsite.allows(&request.url) {
                self.stats.inc("offsite/filtered");
                return Vec::new();
            }
            let limit = self.settings.depth_limit;
            if limit > 0 && request.depth > limit {
                return Vec::new();
            }
        }
        let slot = request.slot.clone().unwrap_or_else(|| {
            request
                .url
                .host_str()
                .unwrap_or_default()
                .to_ascii_lowercase()
        });
        let policy = self.policies.for_key(&slot);
        let push = |fp: Option<u64>, r: &Request| -> Option<Push> {
            Some(Push {
                fp,
                slot: slot.clone(),
                priority: r.priority,
                bytes: postcard::to_allocvec(r).ok()?,
                cap: policy.concurrency,
                delay_us: policy.delay.as_micros() as u64,
                randomize: policy.randomize_delay,
            })
        };
        let mut out = Vec::new();
        if self.settings.robotstxt_obey && request.purpose == Purpose::Page {
            let origin = robots::origin(&request.url);
            if self.robots_pushed.insert(origin.clone()) {
                let mut fetch = Request::new(robots::robots_url(&request.url));
                fetch.purpose = Purpose::Robots { origin };
                fetch.priority = ROBOTS_PRIORITY;
                fetch.slot = request.slot.clone();
                fetch.dont_filter = true;
                self.stats.inc("robotstxt/request_count");
                out.extend(push(Some(fetch.fingerprint()), &fetch));
            }
        }
        let fp = (!request.dont_filter).then(|| request.fingerprint());
        out.extend(push(fp, &request));
        out
    }
}

fn ip_slot(ip: IpAddr) -> String {
    ip.to_string()
}

/// An origin's robots.txt rules: from this worker's cache, else from Redis
/// once some worker fetched them (waiting for that, holding the lease).
async fn robots_for(
    mut conn: JobConn,
    cache: RobotsCache,
    url: &url::Url,
    agent: &str,
) -> Arc<RobotsRules> {
    let origin = robots::origin(url);
    let mut wait = Duration::from_millis(5);
    loop {
        if let Some((rules, _)) = cache.lock().expect("robots cache").get(&origin) {
            return rules.clone();
        }
        if let Ok(Some(answer)) = conn.robots(&origin).await {
            let (status, body) = match answer.iter().position(|b| *b == b'\n') {
                Some(nl) => (&answer[..nl], &answer[nl + 1..]),
                None => (&answer[..], &[][..]),
            };
            let status = std::str::from_utf8(status)
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(404);
            let rules = Arc::new(RobotsRules::from_response(status, body, agent));
            cache
                .lock()
                .expect("robots cache")
                .entry(origin.clone())
                .or_insert_with(|| (rules.clone(), Instant::now()));
            return rules;
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_millis(100));
    }
}
