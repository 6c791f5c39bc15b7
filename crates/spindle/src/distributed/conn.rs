//! One worker's view of a distributed job in Redis: the scripts, called with
//! typed arguments, and plain reads.

use redis::aio::ConnectionManager;
use redis::{AsyncCommands, RedisResult, Value};

use super::scripts::Scripts;
use super::DistributedError;

/// A request to admit, as the scripts take it.
#[derive(Debug, Clone)]
pub(crate) struct Push {
    /// The fingerprint, or `None` to skip the duplicate filter.
    pub fp: Option<u64>,
    pub slot: String,
    pub priority: i32,
    pub bytes: Vec<u8>,
    pub cap: usize,
    pub delay_us: u64,
    pub randomize: bool,
}

/// A request taken from the shared frontier, under a lease.
#[derive(Debug, Clone)]
pub(crate) struct Taken {
    pub id: u64,
    pub token: u64,
    pub slot: String,
    pub bytes: Vec<u8>,
}

/// What a take found besides the requests.
#[derive(Debug, Clone)]
pub(crate) struct TakeResult {
    /// µs until the next slot may start a request; `None` when no slot has
    /// requests waiting with room under its cap.
    pub wait_us: Option<u64>,
    /// Leases held by all workers together.
    pub leases: u64,
    pub taken: Vec<Taken>,
}

/// Everything the finish script commits for one request.
#[derive(Debug, Clone, Default)]
pub(crate) struct Finish {
    pub id: u64,
    pub token: u64,
    /// The slot starts nothing for this long (Retry-After, retry backoff).
    pub pause_us: u64,
    /// The request again, to retry it in its slot (keeps its id).
    pub retry: Option<Vec<u8>>,
    /// Whether it was a page that reached the spider.
    pub page: bool,
    /// A robots.txt answer: origin, `status\nbody`, Crawl-delay µs.
    pub robots: Option<(String, Vec<u8>, u64)>,
    /// The page's items, as JSON objects.
    pub items: Vec<String>,
    /// The requests it led to.
    pub pushes: Vec<Push>,
}

/// The job's keys' prefix: the job name as a hash tag, so every key of the
/// job lives on one Redis Cluster slot and each script's keys are together.
pub(crate) fn prefix(job: &str) -> String {
    format!("spindle:{{{job}}}:")
}

/// The job in Redis, through an auto-reconnecting connection.
#[derive(Clone)]
pub(crate) struct JobConn {
    pub conn: ConnectionManager,
    pub prefix: String,
    scripts: std::sync::Arc<Scripts>,
}

fn push_args(inv: &mut redis::ScriptInvocation<'_>, pushes: &[Push]) {
    inv.arg(pushes.len());
    for p in pushes {
        inv.arg(p.fp.map(|fp| fp.to_string()).unwrap_or_default())
            .arg(&p.slot)
            // Scores are -priority * 2^32 + id in a double: keep them exact.
            .arg(p.priority.clamp(-(1 << 20), 1 << 20))
            .arg(&p.bytes[..])
            .arg(p.cap.max(1))
            .arg(p.delay_us)
            .arg(u8::from(p.randomize));
    }
}

impl JobConn {
    /// Connects to `url` for job `job`. Commands that get no answer within
    /// `timeout` fail (and the caller backs off) rather than hang.
    pub async fn connect(
        url: &str,
        job: &str,
        timeout: std::time::Duration,
    ) -> Result<Self, DistributedError> {
        let client = redis::Client::open(url)?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(timeout)
            .set_response_timeout(timeout)
            .set_number_of_retries(1)
            .set_max_delay(1000);
        let conn = client.get_connection_manager_with_config(config).await?;
        Ok(JobConn {
            conn,
            prefix: prefix(job),
            scripts: std::sync::Arc::new(Scripts::new()),
        })
    }

    /// Admits requests; returns how many were new to the duplicate filter.
    pub async fn seed(&mut self, pushes: &[Push]) -> RedisResult<u64> {
        let mut inv = self.scripts.seed.key(&self.prefix);
        push_args(&mut inv, pushes);
        inv.invoke_async(&mut self.conn).await
    }

    /// Takes up to `max` requests whose slots allow one now.
    pub async fn take(
        &mut self,
        worker: &str,
        lease_us: u64,
        max: usize,
        margin_us: u64,
    ) -> RedisResult<TakeResult> {
        let mut inv = self.scripts.take.key(&self.prefix);
        inv.arg(worker).arg(lease_us).arg(max).arg(margin_us);
        for _ in 0..max {
            inv.arg(rand::random::<f64>());
        }
        let reply: Vec<Value> = inv.invoke_async(&mut self.conn).await?;
        let int = |v: &Value| -> RedisResult<i64> { redis::from_redis_value(v) };
        let mut it = reply.iter();
        let (Some(wait), Some(leases)) = (it.next(), it.next()) else {
            return Err(bad_reply("take"));
        };
        let wait = int(wait)?;
        let mut taken = Vec::new();
        let rest: Vec<&Value> = it.collect();
        for chunk in rest.chunks(4) {
            let [id, token, slot, bytes] = chunk else {
                return Err(bad_reply("take"));
            };
            taken.push(Taken {
                id: int(id)? as u64,
                token: int(token)? as u64,
                slot: redis::from_redis_value(slot)?,
                bytes: redis::from_redis_value(bytes)?,
            });
        }
        Ok(TakeResult {
            wait_us: u64::try_from(wait).ok(),
            leases: int(leases)? as u64,
            taken,
        })
    }

    /// Commits a finished request; `false` when its lease was lost (then
    /// nothing was committed).
    pub async fn finish(&mut self, f: &Finish) -> RedisResult<bool> {
        let mut inv = self.scripts.finish.key(&self.prefix);
        inv.arg(f.id)
            .arg(f.token)
            .arg(f.pause_us)
            .arg(f.retry.as_deref().unwrap_or_default())
            .arg(u8::from(f.page));
        match &f.robots {
            Some((origin, answer, delay)) => inv.arg(origin).arg(&answer[..]).arg(*delay),
            None => inv.arg("").arg("").arg(0),
        };
        inv.arg(f.items.len());
        for item in &f.items {
            inv.arg(item);
        }
        push_args(&mut inv, &f.pushes);
        let done: i64 = inv.invoke_async(&mut self.conn).await?;
        Ok(done == 1)
    }

    /// Renews the leases of `held` (id, token); returns the ids whose lease is lost.
    pub async fn renew(
        &mut self,
        worker: &str,
        lease_us: u64,
        held: &[(u64, u64)],
    ) -> RedisResult<Vec<u64>> {
        let mut inv = self.scripts.renew.key(&self.prefix);
        inv.arg(worker).arg(lease_us);
        for (id, token) in held {
            inv.arg(*id).arg(*token);
        }
        inv.invoke_async(&mut self.conn).await
    }

    /// Returns up to `max` expired leases' requests to the frontier.
    pub async fn reap(&mut self, max: usize) -> RedisResult<u64> {
        self.scripts
            .reap
            .key(&self.prefix)
            .arg(max)
            .invoke_async(&mut self.conn)
            .await
    }

    /// An origin's robots.txt answer, once some worker fetched it.
    pub async fn robots(&mut self, origin: &str) -> RedisResult<Option<Vec<u8>>> {
        self.conn
            .hget(format!("{}robots", self.prefix), origin)
            .await
    }
}

fn bad_reply(script: &str) -> redis::RedisError {
    redis::RedisError::from((
        redis::ErrorKind::TypeError,
        "unexpected reply",
        script.to_string(),
    ))
}
