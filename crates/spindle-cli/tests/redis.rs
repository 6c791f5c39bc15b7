//! Distributed crawls (REDIS_URL): several real `spindle crawl` processes
//! on one job in a real `redis-server` (started here, on a free loopback
//! port, in a temporary directory), judged from the test server's records
//! and from `spindle export`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::reachable;
use serde_json::Value;
use spindle_testsite::{max_in_flight, max_in_flight_by_ip, normalize_path, Site, TestServer};

const LIMIT: Duration = Duration::from_secs(90);

/// One test at a time: each runs three crawlers, a Redis and a site on a
/// machine of two cores, and the timing checks judge the crawlers, not the
/// load the other tests would add.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A `redis-server` of our own, with append-only persistence that syncs every
/// write (`appendfsync always`), so a restart keeps everything acknowledged.
struct Redis {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// Arguments added to redis-server's.
    extra: Vec<String>,
}

impl Redis {
    fn start() -> Redis {
        Redis::start_with(&[])
    }

    fn start_with(extra: &[&str]) -> Redis {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut redis = Redis {
            port,
            dir: tempfile::tempdir().unwrap(),
            child: None,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        redis.run();
        redis
    }

    fn run(&mut self) {
        let child = Command::new("redis-server")
            .args(&self.extra)
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", "yes", "--appendfsync", "always"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (scripts/test installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.pings() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn pings(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
        if s.write_all(b"PING\r\n").is_err() {
            return false;
        }
        let mut line = String::new();
        // A Redis with a password answers NOAUTH: up all the same.
        BufReader::new(s).read_line(&mut line).is_ok()
            && (line.starts_with("+PONG") || line.starts_with("-NOAUTH"))
    }

    /// SIGKILL: the harshest stop; the append-only file keeps the data.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }
}

/// What the workers are given as REDIS_URL.
trait Url {
    fn url(&self) -> String;
}

impl Url for Redis {
    fn url(&self) -> String {
        Redis::url(self)
    }
}

/// A free loopback port whose cluster bus port (+10000) is free too.
fn free_port_pair() -> u16 {
    loop {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        if port < 55000 && TcpListener::bind(("127.0.0.1", port + 10000)).is_ok() {
            return port;
        }
    }
}

/// A Redis Cluster of three primaries, made with `redis-cli --cluster create`.
struct Cluster {
    nodes: Vec<Redis>,
}

impl Cluster {
    fn start() -> Cluster {
        let nodes: Vec<Redis> = (0..3)
            .map(|_| {
                let mut node = Redis {
                    port: free_port_pair(),
                    dir: tempfile::tempdir().unwrap(),
                    child: None,
                    extra: vec!["--cluster-enabled".into(), "yes".into()],
                };
                node.run();
                node
            })
            .collect();
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli is installed with redis-server");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        let cluster = Cluster { nodes };
        cluster.wait_ok();
        cluster
    }

    /// Waits until every node says the cluster is up.
    fn wait_ok(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.nodes.iter().all(|n| {
            let info = Command::new("redis-cli")
                .args(["-p", &n.port.to_string(), "cluster", "info"])
                .output()
                .unwrap();
            String::from_utf8_lossy(&info.stdout).contains("cluster_state:ok")
        }) {
            assert!(Instant::now() < deadline, "the cluster did not come up");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Url for Cluster {
    fn url(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("redis://127.0.0.1:{}", n.port))
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One worker: `spindle crawl` on the job, logs to a file in `dir`.
fn worker(
    server: &TestServer,
    redis: &dyn Url,
    job: &str,
    dir: &Path,
    n: usize,
    args: &[&str],
) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_spindle"));
    cmd.arg("crawl").arg(server.url("a.test", "/"));
    for r in server.resolve_args() {
        cmd.args(["--resolve", &r]);
    }
    let log = std::fs::File::create(dir.join(format!("worker{n}.log"))).unwrap();
    cmd.args(["-s", &format!("REDIS_URL={}", redis.url())])
        .args(["-s", &format!("JOB_NAME={job}")])
        .arg("--stats")
        .arg(dir.join(format!("stats{n}.json")))
        .args(args)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    cmd.spawn().expect("start spindle")
}

fn workers(
    server: &TestServer,
    redis: &dyn Url,
    job: &str,
    dir: &Path,
    count: usize,
    args: &[&str],
) -> Vec<Child> {
    (0..count)
        .map(|n| worker(server, redis, job, dir, n, args))
        .collect()
}

/// A counter summed over the workers' stats.
fn stat(dir: &Path, workers: usize, name: &str) -> u64 {
    (0..workers)
        .map(|n| {
            let text = std::fs::read_to_string(dir.join(format!("stats{n}.json"))).unwrap();
            let stats: Value = serde_json::from_str(&text).unwrap();
            stats[name].as_u64().unwrap_or(0)
        })
        .sum()
}

/// Whether the Redis node on `port` holds a key matching `pattern`.
fn node_has_keys(port: u16, pattern: &str) -> bool {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string(), "--scan", "--pattern", pattern])
        .output()
        .unwrap();
    !out.stdout.is_empty()
}

/// How many workers sent at least one request.
fn workers_that_fetched(dir: &Path, workers: usize) -> usize {
    (0..workers)
        .filter(|n| {
            let text = std::fs::read_to_string(dir.join(format!("stats{n}.json"))).unwrap();
            let stats: Value = serde_json::from_str(&text).unwrap();
            stats["downloader/request_count"].as_u64().unwrap_or(0) > 0
        })
        .count()
}

fn log(dir: &Path, n: usize) -> String {
    let mut s = String::new();
    if let Ok(mut f) = std::fs::File::open(dir.join(format!("worker{n}.log"))) {
        let _ = f.read_to_string(&mut s);
    }
    s
}

/// Waits for every worker; each must exit 0.
fn wait_all(children: &mut [Child], dir: &Path, skip: &[usize]) {
    for (n, child) in children.iter_mut().enumerate() {
        if skip.contains(&n) {
            continue;
        }
        let code = common::wait(child, LIMIT);
        assert_eq!(code, 0, "worker {n} failed:\n{}", log(dir, n));
    }
}

/// `spindle export` of the job to `dir/items.jsonl`; the items' paths.
fn export(redis: &dyn Url, job: &str, dir: &Path, origin: &str) -> Vec<String> {
    let out: PathBuf = dir.join("items.jsonl");
    let status = Command::new(env!("CARGO_BIN_EXE_spindle"))
        .args(["export", "-s", &format!("REDIS_URL={}", redis.url())])
        .args(["-s", &format!("JOB_NAME={job}"), "-o"])
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success(), "spindle export");
    std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("JSON lines");
            normalize_path(v["url"].as_str().unwrap().strip_prefix(origin).unwrap())
        })
        .collect()
}

/// Every reachable page exactly once.
#[track_caller]
fn assert_exactly_once(items: &[String], site: &Site, origin: &str) {
    let mut count: BTreeMap<&str, usize> = BTreeMap::new();
    for p in items {
        *count.entry(p).or_default() += 1;
    }
    let twice: Vec<_> = count.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "items committed more than once: {twice:?}"
    );
    let got: BTreeSet<String> = items.iter().cloned().collect();
    let want = reachable(site, origin, None);
    let lost: Vec<_> = want.difference(&got).collect();
    assert!(lost.is_empty(), "{} pages lost: {lost:?}", lost.len());
    assert_eq!(got, want);
}

/// Every reachable page fetched, and none twice.
#[track_caller]
fn assert_fetched_once(records: &[spindle_testsite::Record], site: &Site, origin: &str) {
    let mut paths: Vec<String> = records.iter().map(|r| normalize_path(&r.path)).collect();
    paths.sort();
    let n = paths.len();
    paths.dedup();
    assert_eq!(n, paths.len(), "a page was fetched twice");
    let got: BTreeSet<String> = paths.into_iter().collect();
    assert_eq!(got, reachable(site, origin, None));
}

fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, last)
}

fn serve(site: &Site) -> (TestServer, String) {
    let server = TestServer::builder()
        .host("a.test", ip(2), site.clone())
        .start()
        .unwrap();
    let origin = server.url("a.test", "");
    (server, origin.trim_end_matches('/').to_string())
}

/// Start-to-start gaps of the server's records, sorted by arrival.
fn gaps(records: &[spindle_testsite::Record]) -> Vec<Duration> {
    spindle_testsite::start_gaps(records)
}

#[test]
fn per_domain_cap_holds_across_three_workers_and_every_page_is_exported_once() {
    let _serial = serial();
    let redis = Redis::start();
    let site = Site::generated(60)
        .links_per_page(6)
        .latency(Duration::from_millis(80));
    let (server, origin) = serve(&site);
    let dir = tempfile::tempdir().unwrap();
    let mut children = workers(
        &server,
        &redis,
        "cap",
        dir.path(),
        3,
        // One request at a time per worker: three workers would put three
        // on the site without the shared cap.
        &[
            "-s",
            "CONCURRENT_REQUESTS_PER_DOMAIN=2",
            "-s",
            "CONCURRENT_REQUESTS=1",
        ],
    );
    wait_all(&mut children, dir.path(), &[]);
    let records = server.records();
    assert_eq!(
        max_in_flight(&records),
        2,
        "the per-domain cap of 2 holds across three workers, and is reached"
    );
    // Each worker fetched some of the pages: the job was shared.
    let shared = workers_that_fetched(dir.path(), 3);
    assert!(shared >= 2, "only {shared} worker(s) fetched anything");
    // robots.txt was fetched once for the whole job, through the same slot.
    let robots = records.iter().filter(|r| r.path == "/robots.txt").count();
    assert_eq!(robots, 1, "one robots.txt fetch for the job");
    let items = export(&redis, "cap", dir.path(), &origin);
    assert_exactly_once(&items, &site, &origin);
    let trips = stat(dir.path(), 3, "distributed/redis_round_trips");
    eprintln!(
        "cap 2 across 3 workers: {} pages, {trips} Redis round trips ({:.2} a page)",
        items.len(),
        trips as f64 / items.len() as f64
    );
}

#[test]
fn fixed_delay_holds_across_three_workers() {
    let _serial = serial();
    let redis = Redis::start();
    let site = Site::generated(25).links_per_page(5);
    let (server, origin) = serve(&site);
    let dir = tempfile::tempdir().unwrap();
    let delay = Duration::from_millis(150);
    let mut children = workers(
        &server,
        &redis,
        "delay",
        dir.path(),
        3,
        &[
            "-s",
            "DOWNLOAD_DELAY=0.15",
            "-s",
            "RANDOMIZE_DOWNLOAD_DELAY=false",
            "-s",
            "CONCURRENT_REQUESTS_PER_DOMAIN=4",
            "-s",
            "ROBOTSTXT_OBEY=false",
        ],
    );
    wait_all(&mut children, dir.path(), &[]);
    let records = server.records();
    assert_fetched_once(&records, &site, &origin);
    assert!(
        workers_that_fetched(dir.path(), 3) >= 2,
        "the job was shared"
    );
    let closest = gaps(&records).into_iter().min().unwrap();
    // No slack: the slot's gap is taken in Redis by Redis's clock, plus the
    // 5 ms send margin a worker adds for the way from the take to the socket.
    assert!(
        closest >= delay,
        "two requests reached the server {closest:?} apart, under the {delay:?} delay"
    );
    eprintln!(
        "fixed delay 150 ms across 3 workers: closest start-to-start gap {closest:?}; \
         {} requests returned as too late to send",
        stat(dir.path(), 3, "distributed/late_returned")
    );
    let items = export(&redis, "delay", dir.path(), &origin);
    assert_exactly_once(&items, &site, &origin);
}

#[test]
fn randomized_delay_and_per_ip_cap_hold_across_three_workers() {
    let _serial = serial();
    let redis = Redis::start();
    let site = || {
        // Pages take 200 ms, longer than any two gaps (0.5–1.5 × 100 ms + 5 ms
        // each): without the shared cap, three would overlap.
        Site::generated(30)
            .links_per_page(5)
            .latency(Duration::from_millis(200))
    };
    // a.test and b.test share one address: one per-IP slot.
    let server = TestServer::builder()
        .host("a.test", ip(2), site())
        .host("b.test", ip(2), site())
        .start()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let b = server.url("b.test", "/");
    let args = [
        b.as_str(),
        "-s",
        "CONCURRENT_REQUESTS_PER_IP=2",
        "-s",
        "DOWNLOAD_DELAY=0.1",
        "-s",
        "ROBOTSTXT_OBEY=false",
    ];
    let mut children = workers(&server, &redis, "perip", dir.path(), 3, &args);
    wait_all(&mut children, dir.path(), &[]);
    let records = server.records();
    let want = reachable(&site(), &server.url("a.test", ""), None).len();
    assert_eq!(
        records.len(),
        2 * want,
        "both hosts crawled whole, each page once"
    );
    assert!(
        workers_that_fetched(dir.path(), 3) >= 2,
        "the job was shared: requests sent per worker {:?}, returned as too late {}",
        (0..3)
            .map(|n| stat(dir.path(), n + 1, "downloader/request_count")
                - stat(dir.path(), n, "downloader/request_count"))
            .collect::<Vec<_>>(),
        stat(dir.path(), 3, "distributed/late_returned")
    );
    let by_ip = max_in_flight_by_ip(&records);
    assert_eq!(
        by_ip[&std::net::IpAddr::from(ip(2))],
        2,
        "a.test + b.test share one cap of 2 across three workers: {by_ip:?}"
    );
    // Randomized delay: each gap is drawn from 0.5–1.5 × 100 ms (+ the 5 ms margin).
    let all = gaps(&records);
    let closest = all.iter().min().unwrap();
    assert!(
        *closest >= Duration::from_millis(50),
        "gap {closest:?} under half the 100 ms delay"
    );
    let mean = all.iter().sum::<Duration>() / all.len() as u32;
    // Drawn from 0.5–1.5 × 100 ms, plus the 5 ms margin, the gaps average
    // 105 ms with a standard deviation of 100/√12 = 28.9 ms; load only
    // lengthens them. Bound: 3.4 standard errors under 105 ms (as the
    // one-process politeness suite), so a fair draw fails 1 run in 3,000.
    let bound = 0.105 - 3.4 * 0.0289 / (all.len() as f64).sqrt();
    assert!(
        mean.as_secs_f64() >= bound,
        "the gaps average {mean:?}, under {bound:.3} s for a 100 ms randomized delay"
    );
    eprintln!(
        "randomized 100 ms delay, per-IP cap 2, 3 workers: closest gap {closest:?}, mean {mean:?}; \
         {} requests returned as too late to send",
        stat(dir.path(), 3, "distributed/late_returned")
    );
}

/// `spindle job status --json` of the job.
fn status(redis: &dyn Url, job: &str) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_spindle"))
        .args([
            "job",
            "status",
            "--json",
            "-s",
            &format!("REDIS_URL={}", redis.url()),
        ])
        .args(["-s", &format!("JOB_NAME={job}")])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("status is JSON")
}

/// Waits until the server has seen `n` requests.
/// Runs worker 0 alone and SIGKILLs it `kill_after.1` after the server has
/// recorded `kill_after.0` responses, then runs workers 1 to `rest` to the
/// end; each must exit 0. Returns how many responses the server had
/// recorded at the kill.
fn kill_first_then_finish(
    server: &TestServer,
    redis: &dyn Url,
    job: &str,
    dir: &Path,
    args: &[&str],
    kill_after: (usize, Duration),
    rest: usize,
) -> usize {
    let mut first = worker(server, redis, job, dir, 0, args);
    until_records(server, kill_after.0);
    std::thread::sleep(kill_after.1);
    first.kill().unwrap();
    first.wait().unwrap();
    let killed_at = server.records().len();
    let mut others: Vec<Child> = (1..=rest)
        .map(|n| worker(server, redis, job, dir, n, args))
        .collect();
    for (i, child) in others.iter_mut().enumerate() {
        let code = common::wait(child, LIMIT);
        assert_eq!(code, 0, "worker {} failed:\n{}", i + 1, log(dir, i + 1));
    }
    killed_at
}

fn until_records(server: &TestServer, n: usize) {
    let deadline = Instant::now() + LIMIT;
    while server.records().len() < n {
        assert!(
            Instant::now() < deadline,
            "the crawl did not get to {n} requests"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_worker_killed_mid_crawl_loses_nothing() {
    let _serial = serial();
    let redis = Redis::start();
    let site = Site::generated(80)
        .links_per_page(6)
        .latency(Duration::from_millis(50));
    let (server, origin) = serve(&site);
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "-s",
        "CONCURRENT_REQUESTS_PER_DOMAIN=4",
        "-s",
        "REDIS_LEASE_SECONDS=2",
    ];
    // Worker 0 alone at first, so it surely holds requests when it dies.
    let killed_at = kill_first_then_finish(
        &server,
        &redis,
        "kill",
        dir.path(),
        &args,
        (12, Duration::ZERO),
        2,
    );
    let st = status(&redis, "kill");
    let reaped = st["reaped"].as_u64().unwrap();
    assert!(
        reaped >= 1,
        "the dead worker's requests were taken back: {st}"
    );
    assert_eq!(st["leases"], 0, "{st}");
    assert_eq!(st["queued"], 0, "{st}");
    let items = export(&redis, "kill", dir.path(), &origin);
    assert_exactly_once(&items, &site, &origin);
    assert_eq!(st["items"].as_u64().unwrap() as usize, items.len());
    eprintln!(
        "worker 0 SIGKILLed after {killed_at} requests holding {reaped} (taken back); {} pages exported once each",
        items.len()
    );
}

#[test]
fn a_worker_stopped_past_its_lease_is_fenced_off() {
    let _serial = serial();
    let redis = Redis::start();
    let site = Site::generated(60)
        .links_per_page(6)
        .latency(Duration::from_millis(50));
    let (server, origin) = serve(&site);
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "-s",
        "CONCURRENT_REQUESTS_PER_DOMAIN=3",
        "-s",
        "REDIS_LEASE_SECONDS=1",
    ];
    // Worker 0 is frozen (as if cut off by a partition) while it holds
    // requests, for longer than its lease; the others take them back.
    let mut children = vec![worker(&server, &redis, "fence", dir.path(), 0, &args)];
    until_records(&server, 10);
    common::signal("-STOP", children[0].id());
    children.extend((1..3).map(|n| worker(&server, &redis, "fence", dir.path(), n, &args)));
    std::thread::sleep(Duration::from_secs(3));
    common::signal("-CONT", children[0].id());
    wait_all(&mut children, dir.path(), &[]);
    let fenced = log(dir.path(), 0);
    assert!(
        fenced.contains("lease lost") || fenced.contains("finish refused"),
        "the frozen worker learned that its leases were gone:\n{fenced}"
    );
    let items = export(&redis, "fence", dir.path(), &origin);
    assert_exactly_once(&items, &site, &origin);
}

#[test]
fn redis_stopped_for_five_seconds_mid_crawl_loses_nothing() {
    let _serial = serial();
    let mut redis = Redis::start();
    let site = Site::generated(60)
        .links_per_page(6)
        .latency(Duration::from_millis(100));
    let (server, origin) = serve(&site);
    let dir = tempfile::tempdir().unwrap();
    let args = ["-s", "CONCURRENT_REQUESTS_PER_DOMAIN=2"];
    let mut children = workers(&server, &redis, "outage", dir.path(), 3, &args);
    let deadline = Instant::now() + LIMIT;
    while server.records().len() < 10 {
        assert!(Instant::now() < deadline, "the crawl did not start");
        std::thread::sleep(Duration::from_millis(10));
    }
    redis.kill();
    let stopped_at = server.records().len();
    std::thread::sleep(Duration::from_secs(5));
    // Nothing new was started while Redis was away: records land when a
    // response ends, so only the requests on the wire when it went (at most
    // the cap, 2) may have landed since.
    let during = server.records().len();
    assert!(
        during <= stopped_at + 2,
        "{} requests ended while Redis was down, more than the cap of 2 on the wire",
        during - stopped_at
    );
    redis.run();
    wait_all(&mut children, dir.path(), &[]);
    let items = export(&redis, "outage", dir.path(), &origin);
    assert_exactly_once(&items, &site, &origin);
    let logged = (0..3).any(|n| log(dir.path(), n).contains("Redis unavailable"));
    assert!(logged, "the outage was logged");
    assert!(
        (0..3).any(|n| log(dir.path(), n).contains("Redis is back")),
        "the recovery was logged"
    );
}

#[test]
fn bad_settings_fail_before_any_fetch() {
    let server = TestServer::builder()
        .host("a.test", ip(2), Site::generated(3))
        .start()
        .unwrap();
    let url = server.url("a.test", "/");
    let run = common::spindle(
        &["crawl", &url, "-s", "REDIS_URL=redis://127.0.0.1:1/0"],
        LIMIT,
    );
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("needs JOB_NAME"), "{}", run.stderr);
    let run = common::spindle(
        &[
            "crawl",
            &url,
            "-s",
            "REDIS_URL=http://nope",
            "-s",
            "JOB_NAME=x",
        ],
        LIMIT,
    );
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("REDIS_URL"), "{}", run.stderr);
    let run = common::spindle(
        &[
            "crawl",
            &url,
            "-s",
            "REDIS_URL=redis://127.0.0.1:1/0",
            "-s",
            "JOB_NAME=x",
            "-o",
            "items.jsonl",
        ],
        LIMIT,
    );
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("spindle export"), "{}", run.stderr);
    let job = [
        "crawl",
        &url,
        "-s",
        "REDIS_URL=redis://127.0.0.1:1/0",
        "-s",
        "JOB_NAME=x",
    ];
    let run = common::spindle(&[&job[..], &["--processes", "2"]].concat(), LIMIT);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("--processes"), "{}", run.stderr);
    let run = common::spindle(&[&job[..], &["--job", "dir"]].concat(), LIMIT);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("JOBDIR"), "{}", run.stderr);
    assert!(server.records().is_empty(), "nothing was fetched");
}

#[test]
fn on_a_three_node_cluster_the_cap_and_delay_hold_and_a_killed_worker_loses_nothing() {
    let _serial = serial();
    let cluster = Cluster::start();
    let site = Site::generated(40)
        .links_per_page(6)
        .latency(Duration::from_millis(120));
    let (server, origin) = serve(&site);
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "-s",
        "CONCURRENT_REQUESTS_PER_DOMAIN=2",
        "-s",
        "CONCURRENT_REQUESTS=1",
        "-s",
        "DOWNLOAD_DELAY=0.05",
        "-s",
        "RANDOMIZE_DOWNLOAD_DELAY=false",
        "-s",
        "REDIS_LEASE_SECONDS=2",
    ];
    // Records land when a response ends; half a page's latency later the
    // worker is in the middle of its next request (its delay is shorter).
    let settle = Duration::from_millis(60);
    kill_first_then_finish(&server, &cluster, "cl", dir.path(), &args, (8, settle), 3);
    let records = server.records();
    assert_eq!(
        max_in_flight(&records),
        2,
        "the cap holds on the cluster, and is reached"
    );
    let closest = gaps(&records).into_iter().min().unwrap();
    assert!(
        closest >= Duration::from_millis(50),
        "two requests {closest:?} apart under the 50 ms delay"
    );
    let st = status(&cluster, "cl");
    assert!(st["reaped"].as_u64().unwrap() >= 1, "{st}");
    let items = export(&cluster, "cl", dir.path(), &origin);
    assert_exactly_once(&items, &site, &origin);
    eprintln!(
        "3-node cluster: closest gap {closest:?}, {} pages exported once each after a SIGKILL",
        items.len()
    );
}

#[test]
fn robots_txt_is_fetched_once_for_the_job_and_its_rules_and_crawl_delay_bind_every_worker() {
    let _serial = serial();
    let redis = Redis::start();
    let site = Site::generated(20)
        .links_per_page(5)
        .robots_txt("User-agent: *\nDisallow: /p/1\nCrawl-delay: 0.1\n");
    let (server, origin) = serve(&site);
    let dir = tempfile::tempdir().unwrap();
    let args = ["-s", "CONCURRENT_REQUESTS_PER_DOMAIN=4"];
    let mut children = workers(&server, &redis, "robots", dir.path(), 3, &args);
    wait_all(&mut children, dir.path(), &[]);
    let records = server.records();
    let robots: Vec<_> = records.iter().filter(|r| r.path == "/robots.txt").collect();
    assert_eq!(robots.len(), 1, "one robots.txt fetch for the whole job");
    let pages = common::pages(records.clone());
    assert!(
        pages.iter().all(|r| !r.path.starts_with("/p/1")),
        "a disallowed page was fetched"
    );
    assert!(
        pages.iter().all(|r| r.start > robots[0].end),
        "no page before robots.txt was answered"
    );
    // Crawl-delay 0.1 s is the floor under the randomized gaps (0.5–1.5 × 0)
    // of every worker.
    let closest = gaps(&pages).into_iter().min().unwrap();
    assert!(
        closest >= Duration::from_millis(100),
        "pages {closest:?} apart under the 0.1 s Crawl-delay"
    );
    assert!(
        workers_that_fetched(dir.path(), 3) >= 2,
        "the job was shared"
    );
    let forbidden = stat(dir.path(), 3, "robotstxt/forbidden");
    assert!(forbidden >= 1, "disallowed links were counted");
    let items = export(&redis, "robots", dir.path(), &origin);
    let got: BTreeSet<String> = items.iter().cloned().collect();
    assert_eq!(got.len(), items.len(), "each page once");
    let want: BTreeSet<String> = pages.iter().map(|r| normalize_path(&r.path)).collect();
    assert_eq!(got, want, "an item for every page fetched");
    eprintln!(
        "robots.txt: {} pages, closest gap {closest:?} under Crawl-delay 0.1 s, {forbidden} disallowed",
        items.len()
    );
}

#[test]
fn a_redis_that_refuses_the_worker_fails_the_crawl_with_its_reason() {
    let _serial = serial();
    let redis = Redis::start_with(&["--requirepass", "secret"]);
    let server = TestServer::builder()
        .host("a.test", ip(2), Site::generated(3))
        .start()
        .unwrap();
    let url = server.url("a.test", "/");
    let mut args = vec!["crawl".to_string(), url];
    for r in server.resolve_args() {
        args.extend(["--resolve".to_string(), r]);
    }
    args.extend(
        [
            "-s",
            &format!("REDIS_URL={}", redis.url()),
            "-s",
            "JOB_NAME=x",
        ]
        .map(String::from),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let run = common::spindle(&args, LIMIT);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("NOAUTH") || run.stderr.contains("uthentication"),
        "{}",
        run.stderr
    );
    assert!(server.records().is_empty(), "nothing was fetched");
}

#[test]
fn a_partitioned_job_spreads_over_the_cluster_and_loses_nothing() {
    let _serial = serial();
    let cluster = Cluster::start();
    // a.test's home page links to b.test's and c.test's (on the same
    // listener, so the same port, known once the server runs): their
    // slots fall in other partitions, so finishing it queues links there.
    let port = std::sync::Arc::new(std::sync::atomic::AtomicU16::new(0));
    let home_port = port.clone();
    let site = || {
        Site::generated(20)
            .links_per_page(4)
            .latency(Duration::from_millis(30))
    };
    let a = site().handler(move |request| {
        (request.path == "/").then(|| {
            let port = home_port.load(std::sync::atomic::Ordering::Relaxed);
            spindle_testsite::Page::new(
                "/",
                200,
                format!(
                    "<a href=\"/p/0\">a</a> <a href=\"http://b.test:{port}/\">b</a> \
                     <a href=\"http://c.test:{port}/\">c</a>"
                ),
            )
        })
    });
    let server = TestServer::builder()
        .host("a.test", ip(2), a)
        .host("b.test", ip(2), site())
        .host("c.test", ip(2), site())
        .start()
        .unwrap();
    port.store(
        server.port_of("a.test"),
        std::sync::atomic::Ordering::Relaxed,
    );
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "--allow-domain",
        "a.test",
        "--allow-domain",
        "b.test",
        "--allow-domain",
        "c.test",
        "-s",
        "REDIS_PARTITIONS=8",
        "-s",
        "CONCURRENT_REQUESTS_PER_DOMAIN=2",
        "-s",
        "REDIS_LEASE_SECONDS=2",
    ];
    kill_first_then_finish(
        &server,
        &cluster,
        "parts",
        dir.path(),
        &args,
        // Records appear when a response ends: wait half a page's latency
        // more, so that the kill finds the worker with requests on the wire
        // (leases to reap), not between a commit and its next take.
        (10, Duration::from_millis(15)),
        3,
    );
    let records = server.records();
    let by_host = spindle_testsite::max_in_flight_by_host(&records);
    assert!(by_host.values().all(|n| *n <= 2), "{by_host:?}");
    // Every page of the three hosts once, in the export as at the server.
    let pages: Vec<String> = common::pages(records)
        .iter()
        .map(|r| format!("{}{}", r.host, normalize_path(&r.path)))
        .collect();
    let fetched: BTreeSet<String> = pages.iter().cloned().collect();
    assert_eq!(
        fetched.len(),
        3 * 21,
        "every page of a.test, b.test and c.test"
    );
    let out = dir.path().join("items.jsonl");
    let exported_ok = Command::new(env!("CARGO_BIN_EXE_spindle"))
        .args(["export", "-s", &format!("REDIS_URL={}", cluster.url())])
        .args(["-s", "JOB_NAME=parts", "-o"])
        .arg(&out)
        .status()
        .unwrap();
    assert!(exported_ok.success());
    let items: Vec<String> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            let url = url::Url::parse(v["url"].as_str().unwrap()).unwrap();
            format!("{}{}", url.host_str().unwrap(), normalize_path(url.path()))
        })
        .collect();
    let exported: BTreeSet<String> = items.iter().cloned().collect();
    assert_eq!(exported.len(), items.len(), "each page's item once");
    assert_eq!(exported, fetched);
    // The job's keys are on more than one shard.
    let shards = cluster
        .nodes
        .iter()
        .filter(|n| node_has_keys(n.port, "spindle:{parts/*"))
        .count();
    assert!(shards >= 2, "the partitions are on {shards} shard(s)");
    let st = status(&cluster, "parts");
    assert!(st["reaped"].as_u64().unwrap() >= 1, "{st}");
    // Workers 1–3 wrote stats (worker 0 was killed).
    let trips: u64 = (1..4)
        .map(|n| {
            let text = std::fs::read_to_string(dir.path().join(format!("stats{n}.json"))).unwrap();
            let stats: Value = serde_json::from_str(&text).unwrap();
            stats["distributed/redis_round_trips"].as_u64().unwrap_or(0)
        })
        .sum();
    eprintln!(
        "8 partitions on {shards} shards: {} pages of 3 hosts exported once each after a SIGKILL; \
         {trips} round trips by the 3 surviving workers",
        items.len()
    );
}

#[test]
fn a_cluster_node_stopped_for_five_seconds_loses_nothing() {
    let _serial = serial();
    let mut cluster = Cluster::start();
    let site = Site::generated(50)
        .links_per_page(5)
        .latency(Duration::from_millis(60));
    let (server, origin) = serve(&site);
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "-s",
        "REDIS_PARTITIONS=4",
        "-s",
        "CONCURRENT_REQUESTS_PER_DOMAIN=2",
    ];
    let mut children = workers(&server, &cluster, "down", dir.path(), 3, &args);
    until_records(&server, 10);
    // The node that holds a.test's partition (every key of its one slot).
    let holder = cluster
        .nodes
        .iter()
        .position(|n| node_has_keys(n.port, "spindle:{down/*}:slot:a.test"))
        .expect("a node holds a.test's slot");
    cluster.nodes[holder].kill();
    let stopped_at = server.records().len();
    std::thread::sleep(Duration::from_secs(5));
    let during = server.records().len();
    cluster.nodes[holder].run();
    cluster.wait_ok();
    wait_all(&mut children, dir.path(), &[]);
    assert!(
        during <= stopped_at + 2,
        "{} requests started while the node was down",
        during - stopped_at
    );
    let items = export(&cluster, "down", dir.path(), &origin);
    assert_exactly_once(&items, &site, &origin);
    assert!(
        (0..3).any(|n| log(dir.path(), n).contains("Redis unavailable")),
        "the outage was logged"
    );
    eprintln!(
        "cluster node {holder} of 3 SIGKILLed for 5 s: {} pages exported once each",
        items.len()
    );
}

#[test]
fn retry_after_pauses_the_slot_for_every_worker() {
    let _serial = serial();
    let redis = Redis::start();
    // /p/3 answers 503 with Retry-After: 1 the first time.
    let refused = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let site = Site::generated(15)
        .links_per_page(4)
        .handler(move |request| {
            (request.path == "/p/3" && !refused.swap(true, std::sync::atomic::Ordering::SeqCst))
                .then(|| {
                    let mut page = spindle_testsite::Page::new("/p/3", 503, "busy");
                    page.headers.push(("Retry-After".into(), "1".into()));
                    page
                })
        });
    let (server, origin) = serve(&site);
    let dir = tempfile::tempdir().unwrap();
    // Cap 1: nothing else is on the wire when the 503 comes back.
    let args = [
        "-s",
        "CONCURRENT_REQUESTS_PER_DOMAIN=1",
        "-s",
        "ROBOTSTXT_OBEY=false",
    ];
    let mut children = workers(&server, &redis, "later", dir.path(), 3, &args);
    wait_all(&mut children, dir.path(), &[]);
    let mut records = server.records();
    records.sort_by_key(|r| r.start);
    let at = records
        .iter()
        .position(|r| r.status == 503)
        .expect("the 503 was served");
    let next = records
        .get(at + 1)
        .expect("the crawl went on after the 503");
    let paused = next.start - records[at].end;
    // The pause is set in Redis after the 503 was read, so the next start
    // is at least 1 s after the 503's end; 5 ms covers Redis's wall clock
    // against the server's monotonic stamps.
    assert!(
        paused >= Duration::from_millis(995),
        "the slot started {} {paused:?} after the 503 with Retry-After: 1",
        next.path
    );
    // Every worker was asking for work during the pause (they poll at most
    // 400 ms apart), so a pause kept by the 503's worker alone would show.
    let items = export(&redis, "later", dir.path(), &origin);
    assert_exactly_once(&items, &site, &origin);
    eprintln!("Retry-After: 1 paused the slot {paused:?} across 3 workers");
}
