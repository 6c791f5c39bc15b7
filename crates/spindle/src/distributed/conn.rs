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
    /// The gap the take set before the slot's next start (µs); 0 without a delay.
    pub gap_us: u64,
}

/// What a take found besides the requests.
#[derive(Debug, Clone)]
pub(crate) struct TakeResult {
    /// µs until the next slot may start a request; `None` when no slot has
    /// requests waiting with room under its cap.
    pub wait_us: Option<u64>,
    /// Leases held by all workers together (in the partition taken from).
    pub leases: u64,
    /// The partition's epoch, bumped by every step that changes its requests.
    pub epoch: u64,
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

/// The prefixes of a job's partitions: the job's own with one, else one hash
/// tag per partition (`spindle:{JOB/k}:`), which a cluster spreads over its shards.
pub(crate) fn prefixes(job: &str, parts: usize) -> Vec<String> {
    if parts <= 1 {
        return vec![prefix(job)];
    }
    (0..parts)
        .map(|k| format!("spindle:{{{job}/{k}}}:"))
        .collect()
}

/// The most partitions a job may have. A request's id in this process is
/// its id in its partition × this + the partition, so ids from different
/// partitions never meet; [`part_of`] gives the partition back.
pub(crate) const MAX_PARTS: u64 = 4096;

/// The partition of a request, from its id in this process.
pub(crate) fn part_of(id: u64) -> usize {
    (id % MAX_PARTS) as usize
}

/// The partition of a crawl slot.
pub(crate) fn partition(slot: &str, parts: usize) -> usize {
    if parts <= 1 {
        return 0;
    }
    (xxhash_rust::xxh3::xxh3_64(slot.as_bytes()) % parts as u64) as usize
}

/// A connection to one Redis, or to a Redis Cluster (REDIS_URL with several
/// comma-separated node URLs), where each command goes to the shard of its
/// keys: for the scripts, the job's hash tag.
#[derive(Clone)]
pub(crate) enum Conn {
    Single(ConnectionManager),
    Cluster(redis::cluster_async::ClusterConnection),
}

impl redis::aio::ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> redis::RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// The node URLs of a `REDIS_URL`: one, or several (a Redis Cluster) separated by commas.
pub fn nodes(url: &str) -> Vec<&str> {
    url.split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .collect()
}

/// The job in Redis, through an auto-reconnecting connection.
#[derive(Clone)]
pub(crate) struct JobConn {
    pub conn: Conn,
    /// One prefix per partition.
    pub prefixes: Vec<String>,
    scripts: std::sync::Arc<Scripts>,
    /// Commands sent (round trips), by this connection and its clones.
    pub calls: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

/// A fingerprint as the duplicate filter files it: its bucket (the top 16
/// bits, in hex) and its value as a signed integer, which Redis stores in
/// an intset.
pub(crate) fn seen_member(fp: u64) -> String {
    format!("{:x}:{}", fp >> 48, fp as i64)
}

fn push_args(cmd: &mut redis::Cmd, pushes: &[Push]) {
    cmd.arg(pushes.len());
    for p in pushes {
        cmd.arg(p.fp.map(seen_member).unwrap_or_default())
            .arg(&p.slot)
            // Scores are -priority * 2^32 + id in a double: keep them exact.
            .arg(p.priority.clamp(-(1 << 20), 1 << 20))
            .arg(&p.bytes[..])
            .arg(p.cap.max(1))
            .arg(p.delay_us)
            .arg(u8::from(p.randomize));
    }
}

fn finish_args(cmd: &mut redis::Cmd, f: &Finish) {
    cmd.arg(f.id / MAX_PARTS)
        .arg(f.token)
        .arg(f.pause_us)
        .arg(f.retry.as_deref().unwrap_or_default())
        .arg(u8::from(f.page));
    match &f.robots {
        Some((origin, answer, delay)) => cmd.arg(origin).arg(&answer[..]).arg(*delay),
        None => cmd.arg("").arg("").arg(0),
    };
    cmd.arg(f.items.len());
    for item in &f.items {
        cmd.arg(item);
    }
    push_args(cmd, &f.pushes);
}

fn parse_take(reply: &Value, part: usize) -> RedisResult<TakeResult> {
    let reply: Vec<Value> = redis::from_redis_value(reply)?;
    let int = |v: &Value| -> RedisResult<i64> { redis::from_redis_value(v) };
    let mut it = reply.iter();
    let (Some(wait), Some(leases), Some(epoch)) = (it.next(), it.next(), it.next()) else {
        return Err(bad_reply("take"));
    };
    let wait = int(wait)?;
    let epoch = int(epoch)?.max(0) as u64;
    let mut taken = Vec::new();
    let rest: Vec<&Value> = it.collect();
    for chunk in rest.chunks(5) {
        let [id, token, slot, bytes, gap] = chunk else {
            return Err(bad_reply("take"));
        };
        taken.push(Taken {
            id: int(id)? as u64 * MAX_PARTS + part as u64,
            token: int(token)? as u64,
            slot: redis::from_redis_value(slot)?,
            bytes: redis::from_redis_value(bytes)?,
            gap_us: int(gap)?.max(0) as u64,
        });
    }
    Ok(TakeResult {
        wait_us: u64::try_from(wait).ok(),
        leases: int(leases)? as u64,
        epoch,
        taken,
    })
}

/// What a take asks for.
pub(crate) struct TakeArgs<'a> {
    pub worker: &'a str,
    pub lease_us: u64,
    pub max: usize,
    pub margin_us: u64,
    /// How many expired leases the take returns to the frontier first.
    pub reap: usize,
}

impl JobConn {
    fn count(&self) {
        self.calls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// `EVALSHA` of a script with partition `part`'s prefix as its one key.
    fn evalsha(&self, script: &redis::Script, part: usize) -> redis::Cmd {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(script.get_hash()).arg(1).arg(&self.prefixes[part]);
        cmd
    }

    /// How many partitions the job has.
    pub fn parts(&self) -> usize {
        self.prefixes.len()
    }

    /// Sends `pipe` in one round trip; when Redis lost its scripts (a
    /// restart), loads them and sends it again.
    async fn send(&mut self, pipe: &redis::Pipeline) -> RedisResult<Vec<Value>> {
        self.count();
        match pipe.query_async(&mut self.conn).await {
            Err(e) if e.kind() == redis::ErrorKind::NoScriptError => {
                for script in self.scripts.all() {
                    script.prepare_invoke().load_async(&mut self.conn).await?;
                }
                self.count();
                pipe.query_async(&mut self.conn).await
            }
            other => other,
        }
    }

    /// Connects to `url` for job `job`. Commands that get no answer within
    /// `timeout` fail (and the caller backs off) rather than hang.
    ///
    /// `parts` is this worker's `REDIS_PARTITIONS`: recorded by the first
    /// worker of the job, and refused when it differs from the job's. `None`
    /// (status, export) reads the job's.
    pub async fn connect(
        url: &str,
        job: &str,
        timeout: std::time::Duration,
        parts: Option<usize>,
    ) -> Result<Self, DistributedError> {
        let nodes = nodes(url);
        let conn = if nodes.len() > 1 {
            let client = redis::cluster::ClusterClient::builder(nodes)
                .connection_timeout(timeout)
                .response_timeout(timeout)
                .retries(1)
                .build()?;
            Conn::Cluster(client.get_async_connection().await?)
        } else {
            let client = redis::Client::open(url)?;
            let config = redis::aio::ConnectionManagerConfig::new()
                .set_connection_timeout(timeout)
                .set_response_timeout(timeout)
                .set_number_of_retries(1)
                .set_max_delay(1000);
            Conn::Single(client.get_connection_manager_with_config(config).await?)
        };
        let mut conn = conn;
        // A Redis that wants a password (or refuses this client) says so
        // here, in words, rather than to the first script.
        let _: String = redis::cmd("PING").query_async(&mut conn).await?;
        let meta = format!("{}partitions", prefix(job));
        if let Some(n) = parts {
            let _: Option<String> = redis::cmd("SET")
                .arg(&meta)
                .arg(n)
                .arg("NX")
                .query_async(&mut conn)
                .await?;
        }
        let recorded: Option<usize> = redis::cmd("GET").arg(&meta).query_async(&mut conn).await?;
        let recorded = recorded.unwrap_or(1);
        if parts.is_some_and(|n| n != recorded) {
            return Err(DistributedError::Settings(format!(
                "job {job} was started with REDIS_PARTITIONS={recorded}: every worker of a job must give the same"
            )));
        }
        Ok(JobConn {
            conn,
            prefixes: prefixes(job, recorded),
            scripts: std::sync::Arc::new(Scripts::new()),
            calls: Default::default(),
        })
    }

    /// Admits requests; returns how many were new to the duplicate filter.
    pub async fn seed(&mut self, part: usize, pushes: &[Push]) -> RedisResult<u64> {
        let mut cmd = self.evalsha(&self.scripts.seed, part);
        push_args(&mut cmd, pushes);
        let mut pipe = redis::pipe();
        pipe.add_command(cmd);
        let reply = self.send(&pipe).await?;
        redis::from_redis_value(reply.first().ok_or_else(|| bad_reply("seed"))?)
    }

    /// In one round trip: commits `finishes` (each `true` when committed,
    /// `false` when its lease was lost, and then nothing of it was
    /// committed), then, with `take`, reaps expired leases and takes what
    /// the slots allow.
    pub async fn finish_and_take(
        &mut self,
        part: usize,
        finishes: &[Finish],
        take: Option<TakeArgs<'_>>,
    ) -> RedisResult<(Vec<bool>, Option<TakeResult>)> {
        let mut pipe = redis::pipe();
        for f in finishes {
            debug_assert_eq!(part_of(f.id), part);
            let mut cmd = self.evalsha(&self.scripts.finish, part);
            finish_args(&mut cmd, f);
            pipe.add_command(cmd);
        }
        if let Some(t) = &take {
            let mut cmd = self.evalsha(&self.scripts.take, part);
            cmd.arg(t.worker)
                .arg(t.lease_us)
                .arg(t.max)
                .arg(t.margin_us)
                .arg(t.reap);
            for _ in 0..t.max {
                cmd.arg(rand::random::<f64>());
            }
            pipe.add_command(cmd);
        }
        if finishes.is_empty() && take.is_none() {
            return Ok((Vec::new(), None));
        }
        let reply = self.send(&pipe).await?;
        let mut done = Vec::with_capacity(finishes.len());
        for v in &reply[..finishes.len().min(reply.len())] {
            let n: i64 = redis::from_redis_value(v)?;
            done.push(n == 1);
        }
        let taken = match (&take, reply.get(finishes.len())) {
            (Some(_), Some(v)) => Some(parse_take(v, part)?),
            (Some(_), None) => return Err(bad_reply("take")),
            (None, _) => None,
        };
        Ok((done, taken))
    }

    /// Renews the leases of `held` (id, token); returns the ids whose lease is lost.
    pub async fn renew(
        &mut self,
        part: usize,
        worker: &str,
        lease_us: u64,
        held: &[(u64, u64)],
    ) -> RedisResult<Vec<u64>> {
        let mut cmd = self.evalsha(&self.scripts.renew, part);
        cmd.arg(worker).arg(lease_us);
        for (id, token) in held {
            debug_assert_eq!(part_of(*id), part);
            cmd.arg(*id / MAX_PARTS).arg(*token);
        }
        let mut pipe = redis::pipe();
        pipe.add_command(cmd);
        let reply = self.send(&pipe).await?;
        let lost: Vec<u64> =
            redis::from_redis_value(reply.first().ok_or_else(|| bad_reply("renew"))?)?;
        Ok(lost
            .into_iter()
            .map(|id| id * MAX_PARTS + part as u64)
            .collect())
    }

    /// An origin's robots.txt answer, once some worker fetched it.
    pub async fn robots(&mut self, part: usize, origin: &str) -> RedisResult<Option<Vec<u8>>> {
        self.count();
        self.conn
            .hget(format!("{}robots", self.prefixes[part]), origin)
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
