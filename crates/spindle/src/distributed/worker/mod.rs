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

use super::conn::{part_of, partition, Finish, JobConn, Push, TakeArgs, Taken};
use super::{DistributedError, COMMAND_TIMEOUT};
use crate::downloader::dns::Resolver;
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
/// Added to every delayed gap in Redis, and the longest a worker may take
/// from asking for a request to sending it: the way from the take to the
/// socket (the reply, the task, the connection) is not the same for two
/// requests, so two takes exactly a delay apart could reach the site closer.
/// A request that would be sent later than this after its take is returned
/// to the frontier instead (5 ms: the one-process gate's former margin,
/// from the gate-to-socket shortfalls measured with both cores busy, up to
/// 3.7 ms).
const SEND_MARGIN: Duration = Duration::from_millis(5);
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
    robots_pushed: HashSet<(String, usize)>,
    /// The partition the next take goes to.
    cursor: usize,
    /// Takes in a row that found nothing, over the partitions.
    misses: usize,
    /// Per partition: whether the last look found nothing waiting or leased, and its epoch.
    looks: Vec<Option<(bool, u64)>>,
    /// The epochs of a first look at every partition that found them all
    /// empty, to be found again before the crawl is declared over.
    confirm: Option<Vec<u64>>,
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
    let conn = connect(url, job, settings.redis_partitions, &parts.shutdown).await?;
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
    let downloader = Arc::new(Downloader::new(settings.clone(), resolver.clone()));
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
        cursor: 0,
        misses: 0,
        looks: Vec::new(),
        confirm: None,
        robots: RobotsCache::default(),
        events: tx,
        down: None,
        lease_us: settings.redis_lease.as_micros() as u64,
        closing: None,
        settings,
    };
    // Every worker seeds the start requests: the duplicate filter keeps one.
    w.looks = vec![None; w.conn.parts()];
    let mut seeds: std::collections::BTreeMap<usize, Vec<Push>> = Default::default();
    for request in w.spider.start_requests() {
        for push in w.admit(request, None).await {
            let part = partition(&push.slot, w.conn.parts());
            seeds.entry(part).or_default().push(push);
        }
    }
    for (part, pushes) in seeds {
        loop {
            match w.conn.seed(part, &pushes).await {
                Ok(n) => {
                    info!(new = n, given = pushes.len(), part, "start requests seeded");
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
    parts: usize,
    shutdown: &ShutdownHandle,
) -> Result<Option<JobConn>, DistributedError> {
    let mut backoff = BACKOFF.0;
    loop {
        match JobConn::connect(url, job, COMMAND_TIMEOUT, Some(parts)).await {
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
                if let Some((next, leases, took, epoch)) = self.step(cr).await {
                    if self.is_over(next.is_none() && leases == 0, epoch, took) {
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
                    if !took && self.conn.parts() > 1 && self.misses < self.conn.parts() {
                        // Look at the next partition at once.
                        wait = Duration::ZERO;
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
        let mut by_part: std::collections::BTreeMap<usize, Vec<(u64, u64)>> = Default::default();
        for (id, h) in &self.held {
            by_part
                .entry(part_of(*id))
                .or_default()
                .push((*id, h.token));
        }
        // With nothing held, one call still says this worker is alive.
        by_part.entry(self.cursor).or_default();
        for (part, held) in by_part {
            match self.conn.renew(part, &self.id, self.lease_us, &held).await {
                Ok(lost) => {
                    self.redis_back();
                    for id in lost {
                        // Taken back while this worker was away: another will
                        // fetch it, and this one's answer would be refused.
                        if self.held.remove(&id).is_some() {
                            warn!(id, "lease lost; the request went back to the frontier");
                            self.stats.inc("distributed/lease_lost");
                        }
                    }
                }
                Err(e) => {
                    self.redis_failed(&e);
                    return false;
                }
            }
        }
        *last_renew = Instant::now();
        self.finishes.retain(|f| self.held.contains_key(&f.id));
        true
    }

    /// One round trip per partition involved: commits the finished requests
    /// (after queueing the links they found in other partitions, so a link
    /// is never lost to a finish that commits), takes back expired leases and
    /// takes what the slots of the cursor's partition allow, up to this
    /// worker's free places. Returns (µs until its next slot is ready, its
    /// leases, whether anything was taken, its epoch), or `None` when Redis failed.
    async fn step(&mut self, cr: usize) -> Option<(Option<u64>, u64, bool, u64)> {
        let parts = self.conn.parts();
        let mut batch: Vec<Finish> = self.finishes.drain(..self.finishes.len().min(64)).collect();
        if parts > 1 {
            let mut foreign: std::collections::BTreeMap<usize, Vec<Push>> = Default::default();
            for f in &batch {
                let own = part_of(f.id);
                for push in &f.pushes {
                    let part = partition(&push.slot, parts);
                    if part != own {
                        foreign.entry(part).or_default().push(push.clone());
                    }
                }
            }
            for (part, pushes) in foreign {
                if let Err(e) = self.conn.seed(part, &pushes).await {
                    // Sent again with their finishes (the duplicate filter
                    // keeps each link once).
                    for f in batch.into_iter().rev() {
                        self.finishes.push_front(f);
                    }
                    self.redis_failed(&e);
                    return None;
                }
            }
            for f in &mut batch {
                let own = part_of(f.id);
                f.pushes.retain(|p| partition(&p.slot, parts) == own);
            }
        }
        // The requests finished here are no longer held after it, committed
        // or refused: their places are free for the take.
        let free = if self.closing.is_some() {
            0
        } else {
            cr.saturating_sub(self.held.len().saturating_sub(batch.len()))
        };
        let cursor = self.cursor;
        let mut groups: std::collections::BTreeMap<usize, Vec<Finish>> = Default::default();
        groups.entry(cursor).or_default();
        for f in batch {
            groups.entry(part_of(f.id)).or_default().push(f);
        }
        let mut groups: VecDeque<(usize, Vec<Finish>)> = groups.into_iter().collect();
        let mut result = None;
        while let Some((part, finishes)) = groups.pop_front() {
            let take = (part == cursor).then(|| TakeArgs {
                worker: &self.id,
                lease_us: self.lease_us,
                max: free,
                margin_us: SEND_MARGIN.as_micros() as u64,
                reap: 100,
            });
            let asked = Instant::now();
            match self.conn.finish_and_take(part, &finishes, take).await {
                Ok((done, taken)) => {
                    self.redis_back();
                    self.finished(finishes, done);
                    if let Some(taken) = taken {
                        let took = !taken.taken.is_empty();
                        for t in taken.taken {
                            self.start(t, asked);
                        }
                        result = Some((taken.wait_us, taken.leases, took, taken.epoch));
                    }
                }
                Err(e) => {
                    // Nothing of these is known to be committed: all of it
                    // is sent again (a finish that did commit is then
                    // refused, harmlessly).
                    let unsent = std::iter::once(finishes)
                        .chain(groups.into_iter().map(|(_, f)| f))
                        .flatten()
                        .collect::<Vec<_>>();
                    for f in unsent.into_iter().rev() {
                        self.finishes.push_front(f);
                    }
                    self.redis_failed(&e);
                    return None;
                }
            }
        }
        result
    }

    /// Whether the crawl is over for everyone, after a take from the
    /// cursor's partition that found it `empty` (nothing waiting, nothing
    /// leased) or not; moves the cursor on when the take found nothing.
    ///
    /// With one partition, one take that finds it empty while this worker
    /// holds nothing is enough (the take is atomic). With several, the
    /// partitions are looked at one after the other, so one look at each is
    /// not a snapshot: a page finished in one may have queued links in
    /// another already looked at. The crawl is over when two full rounds of
    /// looks find every partition empty with the same epochs: then every
    /// partition was empty, with nothing changing, from the end of the
    /// first round to the start of the second.
    fn is_over(&mut self, empty: bool, epoch: u64, took: bool) -> bool {
        let parts = self.conn.parts();
        let idle_here = self.held.is_empty() && self.finishes.is_empty();
        if parts == 1 {
            return idle_here && empty;
        }
        let part = self.cursor;
        self.looks[part] = Some((empty, epoch));
        if took {
            self.misses = 0;
        } else {
            self.misses += 1;
            self.cursor = (part + 1) % parts;
        }
        if !empty || !idle_here {
            self.confirm = None;
            return false;
        }
        if !self.looks.iter().all(|l| matches!(l, Some((true, _)))) {
            return false;
        }
        let epochs: Vec<u64> = self.looks.iter().flatten().map(|(_, e)| *e).collect();
        if self.confirm.as_ref() == Some(&epochs) {
            return true;
        }
        self.confirm = Some(epochs);
        self.looks = vec![None; parts];
        false
    }

    /// Accounts for finishes Redis answered: committed, or refused because
    /// the lease was lost.
    fn finished(&mut self, finishes: Vec<Finish>, done: Vec<bool>) {
        for (f, committed) in finishes.into_iter().zip(done) {
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
        let part = part_of(taken.id);
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
                    admission::robots_for(conn, part, cache, &request.url, &agent).await;
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
            // No local gate: Redis spaced this request's take.
            let result = downloader.fetch(request, None).await;
            let _ = events.send(Event::Downloaded {
                id,
                result: Box::new(result),
            });
        });
    }
}
