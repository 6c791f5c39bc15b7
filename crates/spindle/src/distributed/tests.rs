//! The scripts' semantics, against a real `redis-server` started here on a
//! free loopback port (scripts/test installs it when missing).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::conn::{Finish, JobConn, Push, TakeArgs, TakeResult};

struct Redis {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Redis {
    fn start() -> Redis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = tempfile::tempdir().unwrap();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (scripts/test installs it)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
        Redis {
            child,
            port,
            _dir: dir,
        }
    }

    async fn conn(&self, job: &str) -> JobConn {
        let url = format!("redis://127.0.0.1:{}/0", self.port);
        JobConn::connect(&url, job, Duration::from_secs(5), Some(1))
            .await
            .unwrap()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn push(fp: u64, slot: &str, cap: usize, delay_ms: u64) -> Push {
    Push {
        fp: Some(fp),
        slot: slot.into(),
        priority: 0,
        bytes: fp.to_le_bytes().to_vec(),
        cap,
        delay_us: delay_ms * 1000,
        randomize: false,
    }
}

async fn take(c: &mut JobConn, worker: &str, max: usize, lease_ms: u64) -> TakeResult {
    let args = TakeArgs {
        worker,
        lease_us: lease_ms * 1000,
        max,
        margin_us: 0,
        reap: 100,
    };
    c.finish_and_take(0, &[], Some(args))
        .await
        .unwrap()
        .1
        .unwrap()
}

async fn finish(c: &mut JobConn, f: Finish) -> bool {
    c.finish_and_take(0, &[f], None).await.unwrap().0[0]
}

#[tokio::test]
async fn the_cap_holds_and_a_stale_finish_is_refused_after_its_lease_is_taken_back() {
    let redis = Redis::start();
    let mut a = redis.conn("fence").await;
    let mut b = redis.conn("fence").await;
    assert_eq!(
        a.seed(
            0,
            &[push(1, "s", 1, 0), push(2, "s", 1, 0), push(1, "s", 1, 0)]
        )
        .await
        .unwrap(),
        2,
        "the duplicate filter keeps one of fingerprint 1"
    );
    let first = take(&mut a, "a", 5, 300).await;
    assert_eq!(first.taken.len(), 1, "cap 1: one request of the slot");
    let held = first.taken[0].clone();
    assert_eq!(held.bytes, 1u64.to_le_bytes(), "oldest first");
    let none = take(&mut b, "b", 5, 300).await;
    assert!(none.taken.is_empty(), "the slot is at its cap");
    assert_eq!((none.wait_us, none.leases), (None, 1));
    // A's lease expires; B's next take returns the request to the frontier and takes it.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let again = take(&mut b, "b", 5, 5000).await;
    assert_eq!(again.taken.len(), 1);
    assert_eq!(again.taken[0].id, held.id, "the same request, taken back");
    assert_ne!(again.taken[0].token, held.token, "with a new fencing token");
    let stale = Finish {
        id: held.id,
        token: held.token,
        page: true,
        items: vec![r#"{"from":"a"}"#.into()],
        pushes: vec![push(3, "s", 1, 0)],
        ..Finish::default()
    };
    assert!(!finish(&mut a, stale).await, "A's late finish is refused");
    let fresh = Finish {
        id: again.taken[0].id,
        token: again.taken[0].token,
        page: true,
        items: vec![r#"{"from":"b"}"#.into()],
        pushes: vec![push(2, "s", 1, 0), push(4, "s", 1, 0)],
        ..Finish::default()
    };
    assert!(finish(&mut b, fresh).await);
    let status = super::status(&format!("redis://127.0.0.1:{}/0", redis.port), "fence")
        .await
        .unwrap();
    assert_eq!(status.items, 1, "only B's item: {status:?}");
    assert_eq!(status.reaped, 1);
    assert_eq!(
        status.queued, 2,
        "request 2, and 4 from B's page (2 was seen)"
    );
    assert_eq!(status.leases, 0);
    assert_eq!(
        status.seen, 3,
        "fingerprints 1, 2 and 4; A's 3 never got in"
    );
    assert_eq!(status.slots, [("s".to_string(), 2, 0)]);
}

#[tokio::test]
async fn the_delay_is_timed_by_redis_and_a_retry_keeps_its_place() {
    let redis = Redis::start();
    let mut c = redis.conn("delay").await;
    c.seed(0, &[push(1, "d", 4, 200), push(2, "d", 4, 200)])
        .await
        .unwrap();
    let first = take(&mut c, "w", 4, 5000).await;
    assert_eq!(first.taken.len(), 1, "the delay allows one now");
    assert_eq!(first.taken[0].gap_us, 200_000);
    let wait = first.wait_us.expect("the slot is ready again later");
    assert!(
        (150_000..=200_000).contains(&wait),
        "ready again in {wait} µs"
    );
    let early = take(&mut c, "w", 4, 5000).await;
    assert!(early.taken.is_empty(), "nothing before the delay is over");
    // A retry goes back with its place (before request 2) and a pause of 300 ms.
    let retry = Finish {
        id: first.taken[0].id,
        token: first.taken[0].token,
        pause_us: 300_000,
        retry: Some(b"again".to_vec()),
        ..Finish::default()
    };
    assert!(finish(&mut c, retry).await);
    tokio::time::sleep(Duration::from_millis(220)).await;
    assert!(
        take(&mut c, "w", 4, 5000).await.taken.is_empty(),
        "the pause outlasts the delay"
    );
    tokio::time::sleep(Duration::from_millis(120)).await;
    let next = take(&mut c, "w", 4, 5000).await;
    assert_eq!(next.taken.len(), 1);
    assert_eq!(next.taken[0].bytes, b"again", "the retry first, as retried");
}

/// How many pages a second one Redis carries: 8 connections (as 8 workers)
/// each finish a page (one item, 5 links of which most were seen) and take
/// the next in one pipelined round trip, over 200 slots without delays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_redis_carries_thousands_of_pages_a_second() {
    let redis = Redis::start();
    let mut seed = redis.conn("load").await;
    const SLOTS: u64 = 200;
    const PAGES: u64 = 8_000;
    let seeds: Vec<Push> = (0..SLOTS)
        .map(|i| push(i, &format!("site{i}"), 8, 0))
        .collect();
    seed.seed(0, &seeds).await.unwrap();
    let cpu_before = redis_cpu(&mut seed).await;
    let started = Instant::now();
    let mut tasks = Vec::new();
    // New URLs, handed out one per page until PAGES of them were found.
    let found = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    for w in 0..8u64 {
        let mut c = redis.conn("load").await;
        let found = found.clone();
        tasks.push(tokio::spawn(async move {
            let name = format!("w{w}");
            let mut held = Vec::new();
            let mut pages = 0u64;
            let mut trips = 0u64;
            loop {
                let finishes: Vec<Finish> = held
                    .drain(..)
                    .map(|t: super::conn::Taken| {
                        let links = (0..5)
                            .map(|k| {
                                // One new URL in five; the rest were seen.
                                let new = (k == 0)
                                    .then(|| {
                                        found.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                                    })
                                    .filter(|n| *n < PAGES);
                                let fp = new.map_or(k, |n| SLOTS + n);
                                push(fp, &format!("site{}", fp % SLOTS), 8, 0)
                            })
                            .collect();
                        Finish {
                            id: t.id,
                            token: t.token,
                            page: true,
                            items: vec![format!(r#"{{"page":{}}}"#, t.id)],
                            pushes: links,
                            ..Finish::default()
                        }
                    })
                    .collect();
                pages += finishes.len() as u64;
                let args = TakeArgs {
                    worker: &name,
                    lease_us: 30_000_000,
                    max: 16,
                    margin_us: 0,
                    reap: 100,
                };
                let (done, taken) = c.finish_and_take(0, &finishes, Some(args)).await.unwrap();
                trips += 1;
                assert!(done.iter().all(|d| *d), "every finish committed");
                let taken = taken.unwrap();
                if taken.taken.is_empty() && taken.leases == 0 && taken.wait_us.is_none() {
                    return (pages, trips);
                }
                held = taken.taken;
            }
        }));
    }
    let (mut pages, mut trips) = (0, 0);
    for t in tasks {
        let (p, r) = t.await.unwrap();
        pages += p;
        trips += r;
    }
    let secs = started.elapsed().as_secs_f64();
    let cpu = redis_cpu(&mut seed).await - cpu_before;
    let status = super::status(&format!("redis://127.0.0.1:{}/0", redis.port), "load")
        .await
        .unwrap();
    assert_eq!(status.pages, pages);
    assert_eq!(status.items, pages, "one item per page, committed once");
    assert_eq!(pages, SLOTS + PAGES, "every admitted page was finished");
    eprintln!(
        "one Redis: {pages} pages in {secs:.2} s = {:.0} pages/s, {:.2} round trips a page; \
         Redis used {cpu:.2} s of CPU = {:.0} µs a page, {:.0} pages/s at one full core",
        pages as f64 / secs,
        trips as f64 / pages as f64,
        cpu * 1e6 / pages as f64,
        pages as f64 / cpu
    );
}

/// Redis's own CPU time so far (user + system), from `INFO cpu`.
async fn redis_cpu(c: &mut JobConn) -> f64 {
    let info: String = redis::cmd("INFO")
        .arg("cpu")
        .query_async(&mut c.conn)
        .await
        .unwrap();
    info.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            matches!(k, "used_cpu_sys" | "used_cpu_user").then(|| v.trim().parse::<f64>().ok())?
        })
        .sum()
}

/// The duplicate filter's memory, from `INFO memory`: half a million
/// fingerprints filed as the scripts file them (65,536 sets by their top 16
/// bits, values as signed integers, so each set is an intset) cost at most 32
/// bytes each; one set of them would cost about 80.
#[tokio::test]
async fn the_duplicate_filter_costs_at_most_32_bytes_a_url() {
    let redis = Redis::start();
    let mut c = redis.conn("mem").await;
    let used = |info: String| -> u64 {
        info.lines()
            .find_map(|l| l.strip_prefix("used_memory:"))
            .and_then(|v| v.trim().parse().ok())
            .expect("used_memory")
    };
    let before = used(
        redis::cmd("INFO")
            .arg("memory")
            .query_async(&mut c.conn)
            .await
            .unwrap(),
    );
    const N: u64 = 500_000;
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    for _ in 0..N / 5_000 {
        let mut pipe = redis::pipe();
        for _ in 0..5_000 {
            // xorshift: well spread 64-bit values, as xxh3 fingerprints are.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let member = super::conn::seen_member(x);
            let (bucket, value) = member.split_once(':').unwrap();
            pipe.cmd("SADD")
                .arg(format!("{}seen:{bucket}", c.prefixes[0]))
                .arg(value)
                .ignore();
        }
        let () = pipe.query_async(&mut c.conn).await.unwrap();
    }
    let after = used(
        redis::cmd("INFO")
            .arg("memory")
            .query_async(&mut c.conn)
            .await
            .unwrap(),
    );
    let per_url = (after - before) as f64 / N as f64;
    eprintln!("duplicate filter: {per_url:.1} bytes a URL at {N} URLs (INFO memory)");
    assert!(per_url <= 32.0, "{per_url:.1} bytes a URL");
}

#[tokio::test]
async fn every_worker_of_a_job_must_give_the_same_partitions() {
    let redis = Redis::start();
    let url = format!("redis://127.0.0.1:{}/0", redis.port);
    let first = JobConn::connect(&url, "p", Duration::from_secs(5), Some(4))
        .await
        .unwrap();
    assert_eq!(first.parts(), 4);
    assert_eq!(first.prefixes[3], "spindle:{p/3}:");
    let err = JobConn::connect(&url, "p", Duration::from_secs(5), Some(2))
        .await
        .err()
        .expect("a second worker with other partitions is refused")
        .to_string();
    assert!(err.contains("REDIS_PARTITIONS=4"), "{err}");
    let reader = JobConn::connect(&url, "p", Duration::from_secs(5), None)
        .await
        .unwrap();
    assert_eq!(reader.parts(), 4, "status and export read the job's");
    assert_eq!(super::conn::partition("a.test", 1), 0);
    assert!(super::conn::partition("a.test", 4) < 4);
}
