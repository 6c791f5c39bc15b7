//! Distributed crawls: many `spindle crawl` processes, on any number of
//! machines, work on one job whose state lives in Redis (`REDIS_URL` and
//! `JOB_NAME`). See `docs/distributed.md`.
//!
//! Redis holds the shared frontier (a queue per slot, by priority), the
//! duplicate filter, robots.txt answers, each slot's politeness state and
//! the job's items. A worker changes them only through the Lua scripts in
//! [`scripts`](self) (take, finish, renew, reap, seed), each atomic and
//! timed by Redis's own clock, so the per-slot caps and delays hold across
//! all workers together, whatever their clocks say. Requests are held under
//! leases with fencing tokens: a dead worker's requests go back to the
//! frontier, and its late answers are refused, so every page's items are
//! committed once.

mod conn;
mod scripts;
#[cfg(test)]
mod tests;
mod worker;

use std::path::Path;
use std::time::Duration;

use redis::AsyncCommands;

pub(crate) use worker::{run, Parts};

/// A distributed job could not be reached, read or written.
#[derive(Debug, thiserror::Error)]
pub enum DistributedError {
    /// Redis refused or failed a command, or could not be reached.
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// The settings do not name a distributed job.
    #[error("{0}")]
    Settings(String),
    /// The output file could not be written.
    #[error("{path}: {error}")]
    Output {
        /// The file.
        path: String,
        /// Why.
        error: std::io::Error,
    },
    /// Redis holds something this version cannot read.
    #[error("job {job}: {message}")]
    Corrupt {
        /// The job's name.
        job: String,
        /// What could not be read.
        message: String,
    },
}

/// How long one Redis command may take before it counts as an outage.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// What a distributed job holds now.
#[derive(Debug, Clone, serde::Serialize)]
pub struct JobStatus {
    /// The job's name.
    pub job: String,
    /// Requests waiting in the shared frontier.
    pub queued: u64,
    /// Requests held by workers under a lease.
    pub leases: u64,
    /// Fingerprints in the duplicate filter.
    pub seen: u64,
    /// Items committed.
    pub items: u64,
    /// Pages finished.
    pub pages: u64,
    /// Requests taken back from workers whose lease expired.
    pub reaped: u64,
    /// Workers seen within the last lease period, with seconds since each was last heard from.
    pub workers: Vec<(String, f64)>,
    /// Slots with requests waiting: slot, waiting, in flight.
    pub slots: Vec<(String, u64, u64)>,
}

impl JobStatus {
    /// Whether nothing waits and nothing is held: the crawl is over.
    pub fn is_finished(&self) -> bool {
        self.queued == 0 && self.leases == 0 && self.pages > 0
    }
}

/// Reads a distributed job's figures (summed over its partitions).
pub async fn status(url: &str, job: &str) -> Result<JobStatus, DistributedError> {
    let mut c = conn::JobConn::connect(url, job, COMMAND_TIMEOUT, None).await?;
    let (mut queued, mut leases, mut items) = (0u64, 0u64, 0u64);
    let mut stats: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
    let mut heard: std::collections::HashMap<String, f64> = std::collections::HashMap::new();
    let mut slots = Vec::new();
    let con = &mut c.conn;
    let (secs, micros): (u64, u64) = redis::cmd("TIME").query_async(con).await?;
    let now = secs as f64 + micros as f64 / 1e6;
    for p in &c.prefixes {
        queued += con.hlen::<_, u64>(format!("{p}req")).await?;
        leases += con.zcard::<_, u64>(format!("{p}leases")).await?;
        items += con.llen::<_, u64>(format!("{p}items")).await?;
        let part: std::collections::HashMap<String, u64> = con.hgetall(format!("{p}stats")).await?;
        for (k, v) in part {
            *stats.entry(k).or_default() += v;
        }
        let seen_workers: Vec<(String, f64)> = con
            .zrangebyscore_withscores(format!("{p}workers"), "-inf", "+inf")
            .await?;
        for (w, at) in seen_workers {
            let last = heard.entry(w).or_insert(0.0);
            *last = last.max(at);
        }
        let names: Vec<String> = con.smembers(format!("{p}slots")).await?;
        for slot in names {
            let waiting: u64 = con.zcard(format!("{p}q:{slot}")).await?;
            let inflight: Option<u64> = con.hget(format!("{p}slot:{slot}"), "inflight").await?;
            let inflight = inflight.unwrap_or(0);
            if waiting + inflight > 0 {
                slots.push((slot, waiting, inflight));
            }
        }
    }
    let mut workers: Vec<(String, f64)> = heard
        .into_iter()
        .map(|(w, at)| (w, (now - at / 1e6).max(0.0)))
        .filter(|(_, ago)| *ago < 120.0)
        .collect();
    workers.sort_by(|a, b| a.0.cmp(&b.0));
    slots.sort();
    Ok(JobStatus {
        job: job.to_string(),
        // `req` also holds requests in flight.
        queued: queued.saturating_sub(leases),
        leases,
        seen: stats.get("seen").copied().unwrap_or(0),
        items,
        pages: stats.get("pages").copied().unwrap_or(0),
        reaped: stats.get("reaped").copied().unwrap_or(0),
        workers,
        slots,
    })
}

/// Writes a distributed job's items to `path` as JSON lines, in the order
/// they were committed (partition after partition); returns how many. Each page's items were committed
/// once, in the step that finished the page.
pub async fn export(url: &str, job: &str, path: &Path) -> Result<u64, DistributedError> {
    use std::io::Write;
    let mut c = conn::JobConn::connect(url, job, COMMAND_TIMEOUT, None).await?;
    let output = |error| DistributedError::Output {
        path: path.display().to_string(),
        error,
    };
    let file = std::fs::File::create(path).map_err(output)?;
    let mut out = std::io::BufWriter::new(file);
    let mut total = 0u64;
    const CHUNK: isize = 1000;
    // Partition by partition, each in commit order.
    for prefix in c.prefixes.clone() {
        let key = format!("{prefix}items");
        let mut at = 0isize;
        loop {
            let items: Vec<String> = c.conn.lrange(&key, at, at + CHUNK - 1).await?;
            for item in &items {
                if serde_json::from_str::<crate::Item>(item).is_err() {
                    return Err(DistributedError::Corrupt {
                        job: job.to_string(),
                        message: format!("item {at} of {key} is not a JSON object"),
                    });
                }
                out.write_all(item.as_bytes()).map_err(output)?;
                out.write_all(b"\n").map_err(output)?;
            }
            at += items.len() as isize;
            if (items.len() as isize) < CHUNK {
                break;
            }
        }
        total += at as u64;
    }
    out.flush().map_err(output)?;
    out.into_inner()
        .map_err(|e| output(e.into_error()))?
        .sync_all()
        .map_err(output)?;
    Ok(total)
}
