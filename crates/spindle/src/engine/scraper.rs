//! The scraper part: responses waiting to be parsed, the parse threads, and
//! what the spider makes of each page.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Condvar, Mutex, PoisonError};

use tokio::sync::mpsc;
use tracing::warn;

use super::{panic_message, Event};
use crate::response::Response;
use crate::spider::{Output, Spider};
use crate::stats::Stats;

/// Bytes of downloaded bodies allowed to wait for parsing before the engine
/// stops starting downloads (Scrapy's `SCRAPER_SLOT_MAX_ACTIVE_SIZE`; each
/// response counts at least 1 KiB, as there).
const PARSE_BACKLOG_BYTES: usize = 5_000_000;

type Job = Box<dyn FnOnce() + Send>;

/// The parse threads: one queue of pages, and threads that sleep on it when it is empty.
///
/// It replaced a rayon pool, whose idle workers spin on `sched_yield` before they sleep:
/// with a page arriving every ~0.1 ms that spinning was 10–13 % of a crawl's CPU on the Rust
/// docs, more than the parsing. Here an idle thread waits on a condition variable, and a new
/// page wakes one only if one is waiting.
pub(super) struct ParsePool {
    shared: Arc<(Mutex<Queue>, Condvar)>,
}

#[derive(Default)]
struct Queue {
    jobs: VecDeque<Job>,
    /// Threads waiting for a job.
    idle: usize,
    closed: bool,
}

impl ParsePool {
    /// Starts `threads` parse threads.
    pub(super) fn new(threads: usize) -> std::io::Result<Self> {
        let shared = Arc::new((Mutex::new(Queue::default()), Condvar::new()));
        for i in 0..threads.max(1) {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name(format!("spindle-parse-{i}"))
                .spawn(move || Self::work(&shared))?;
        }
        Ok(ParsePool { shared })
    }

    fn work(shared: &(Mutex<Queue>, Condvar)) {
        let (queue, wake) = shared;
        let mut q = queue.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if let Some(job) = q.jobs.pop_front() {
                drop(q);
                job();
                q = queue.lock().unwrap_or_else(PoisonError::into_inner);
            } else if q.closed {
                return;
            } else {
                q.idle += 1;
                q = wake.wait(q).unwrap_or_else(PoisonError::into_inner);
                q.idle -= 1;
            }
        }
    }

    /// Queues a job (it catches its own panics) for the next free thread.
    fn spawn(&self, job: impl FnOnce() + Send + 'static) {
        let (queue, wake) = &*self.shared;
        let mut q = queue.lock().unwrap_or_else(PoisonError::into_inner);
        q.jobs.push_back(Box::new(job));
        let idle = q.idle > 0;
        drop(q);
        if idle {
            wake.notify_one();
        }
    }
}

impl Drop for ParsePool {
    /// The threads finish the queued jobs, then stop; nothing waits for them here.
    fn drop(&mut self) {
        let (queue, wake) = &*self.shared;
        queue.lock().unwrap_or_else(PoisonError::into_inner).closed = true;
        wake.notify_all();
    }
}

/// Parses on a pool of threads sized to the cores (or, in multi-process
/// mode, keeps count of what the workers are parsing).
pub(super) struct Scraper {
    spider: Arc<dyn Spider>,
    /// `None` in multi-process mode: workers parse what they fetch.
    pool: Option<ParsePool>,
    backlog: usize,
    parses: usize,
    pub(super) stats: Stats,
}

impl Scraper {
    pub(super) fn new(spider: Arc<dyn Spider>, pool: Option<ParsePool>) -> Self {
        Scraper {
            spider,
            pool,
            backlog: 0,
            parses: 0,
            stats: Stats::default(),
        }
    }

    /// Whether enough bodies wait for parsing that no download should start
    /// (Scrapy's `scraper.slot.needs_backout()`).
    pub(super) fn needs_backout(&self) -> bool {
        self.backlog >= PARSE_BACKLOG_BYTES
    }

    pub(super) fn is_idle(&self) -> bool {
        self.parses == 0
    }

    /// What a body of `len` bytes counts against the backlog.
    pub(super) fn backlog_of(len: usize) -> usize {
        len.max(1024)
    }

    /// A parse has started, here or in a worker.
    pub(super) fn started(&mut self, backlog: usize) {
        self.backlog += backlog;
        self.parses += 1;
    }

    /// Parses a response on this process's parse threads; the result comes back as an event.
    pub(super) fn parse(&mut self, response: Response, events: &mpsc::UnboundedSender<Event>) {
        let Some(pool) = &self.pool else {
            unreachable!("worker processes parse their own pages");
        };
        let backlog = Self::backlog_of(response.body.len());
        let spider = self.spider.clone();
        let tx = events.clone();
        let depth = response.depth();
        let job = (response.request.job != 0)
            .then(|| (response.request.queue_key(), response.request.job));
        pool.spawn(move || {
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
                job,
                depth,
                backlog,
                result,
            });
        });
        self.started(backlog);
    }

    /// A parse ended; the spider's output, its own counters already counted.
    pub(super) fn finished(
        &mut self,
        backlog: usize,
        result: Result<Output, String>,
    ) -> Option<Output> {
        self.parses -= 1;
        self.backlog -= backlog;
        match result {
            Ok(mut output) => {
                for (key, n) in output.stats.drain(..) {
                    self.stats.inc_by(key, n);
                }
                Some(output)
            }
            Err(error) => {
                warn!(%error, "spider error");
                self.stats.inc("spider_exceptions/count");
                None
            }
        }
    }

    /// A parse that will not finish (its worker died); it leaves the backlog.
    pub(super) fn abandoned(&mut self, backlog: usize) {
        self.parses -= 1;
        self.backlog -= backlog;
    }

    /// Counters from a worker's parse (the spider's own stats).
    pub(super) fn count(&mut self, key: &str, n: u64) {
        self.stats.inc_by(key, n);
    }
}
