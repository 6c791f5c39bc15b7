//! The scraper part: responses waiting to be parsed, the parse threads, and
//! what the spider makes of each page.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

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

/// Parses on a pool of threads sized to the cores (or, in multi-process
/// mode, keeps count of what the workers are parsing).
pub(super) struct Scraper {
    spider: Arc<dyn Spider>,
    /// `None` in multi-process mode: workers parse what they fetch.
    pool: Option<rayon::ThreadPool>,
    backlog: usize,
    parses: usize,
    pub(super) stats: Stats,
}

impl Scraper {
    pub(super) fn new(spider: Arc<dyn Spider>, pool: Option<rayon::ThreadPool>) -> Self {
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
