//! A broad-crawl test bed on loopback: a wildcard DNS server, one HTTP
//! listener that answers every host name with long keep-alive, and hanging
//! hosts that accept connections and never answer.
//!
//! - DNS (UDP, on its own loopback address and an OS-chosen port): every
//!   `hN.broad.test` answers the good address, every `hangN.broad.test` the
//!   hanging address, anything else is `NXDOMAIN`. AAAA questions get an
//!   empty answer. Point a crawler at it with `DNS_NAMESERVERS=<dns_addr>`.
//! - HTTP: host `hN` (N < `hosts`) has pages `/`, `/p1` … `/p{pages-1}`;
//!   `/` links to its own pages, to host N+1 (so every host is reachable
//!   from `h0`) and to `links` other hosts picked by a fixed hash; every
//!   `hang_every`-th host's `/` also links to a hanging host's `/`, `/p1`
//!   and `/p2`. `/robots.txt` is 404. Connections are kept alive as long as
//!   the client wants (hyper's default: no idle timeout).
//! - Hanging hosts: the same port on the hanging address; each connection is
//!   accepted, read, and never answered.
//!
//! - `tail.broad.test` (on the good address) answers `/` only once
//!   [`BroadSite::release_tail`] is called: a benchmark keeps a crawl alive
//!   with it to measure the crawler after every other host is done.
//!
//! Every HTTP request is recorded as `(host, path)` (unless recording is off).

use std::convert::Infallible;
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::AsyncReadExt;
use tokio::sync::oneshot;

/// The DNS suffix every test host name ends with.
pub const SUFFIX: &str = "broad.test";

/// What to serve.
#[derive(Debug, Clone)]
pub struct BroadConfig {
    /// Good hosts: `h0` … `h{hosts-1}`.
    pub hosts: usize,
    /// Pages per good host (`/` and `/p1` …).
    pub pages: usize,
    /// Links from each `/` to other good hosts (beyond host N+1).
    pub links: usize,
    /// Hanging hosts: `hang0` … .
    pub hanging: usize,
    /// One good host in this many links to a hanging host.
    pub hang_every: usize,
    /// Where the good hosts listen.
    pub good_ip: IpAddr,
    /// Where the hanging hosts listen (same port).
    pub hang_ip: IpAddr,
    /// Where the DNS server listens.
    pub dns_ip: IpAddr,
    /// Keep a record of every request.
    pub record: bool,
    /// How long each good page takes to answer.
    pub latency: Duration,
}

/// A running test bed; dropping it stops it.
pub struct BroadSite {
    tail: Arc<tokio::sync::Notify>,
    tail_released: Arc<std::sync::atomic::AtomicBool>,
    served: Arc<AtomicU64>,
    config: BroadConfig,
    port: u16,
    dns_addr: SocketAddr,
    records: Arc<Mutex<Vec<(String, String)>>>,
    dns_queries: Arc<AtomicU64>,
    hang_connections: Arc<AtomicUsize>,
    good_connections: Arc<AtomicUsize>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    dns_thread: Option<std::thread::JoinHandle<()>>,
    dns_stop: Arc<std::sync::atomic::AtomicBool>,
}

impl BroadSite {
    /// Binds the listeners and the DNS server and starts serving.
    pub fn start(config: BroadConfig) -> io::Result<BroadSite> {
        // The good and the hanging listener share a port, so links carry one.
        let (good, hang) = bind_pair(config.good_ip, config.hang_ip)?;
        let port = good.local_addr()?.port();
        let dns = UdpSocket::bind(SocketAddr::new(config.dns_ip, 0))?;
        dns.set_read_timeout(Some(Duration::from_millis(100)))?;
        let dns_addr = dns.local_addr()?;
        let records: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
        let dns_queries: Arc<AtomicU64> = Arc::default();
        let hang_connections: Arc<AtomicUsize> = Arc::default();
        let good_connections: Arc<AtomicUsize> = Arc::default();
        let dns_stop: Arc<std::sync::atomic::AtomicBool> = Arc::default();

        let dns_thread = {
            let (config, queries, stop) = (config.clone(), dns_queries.clone(), dns_stop.clone());
            std::thread::Builder::new()
                .name("broad-dns".into())
                .spawn(move || serve_dns(dns, &config, &queries, &stop))?
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("broad-site")
            .enable_all()
            .build()?;
        let (tx, rx) = oneshot::channel::<()>();
        let tail: Arc<tokio::sync::Notify> = Arc::default();
        let tail_released: Arc<std::sync::atomic::AtomicBool> = Arc::default();
        let served: Arc<AtomicU64> = Arc::default();
        let state = Arc::new(State {
            tail: tail.clone(),
            tail_released: tail_released.clone(),
            served: served.clone(),
            config: config.clone(),
            port,
            records: records.clone(),
        });
        let (hc, gc) = (hang_connections.clone(), good_connections.clone());
        let thread = std::thread::Builder::new()
            .name("broad-site".into())
            .spawn(move || {
                runtime.block_on(async move {
                    good.set_nonblocking(true).expect("nonblocking");
                    hang.set_nonblocking(true).expect("nonblocking");
                    let good = tokio::net::TcpListener::from_std(good).expect("listener");
                    let hang = tokio::net::TcpListener::from_std(hang).expect("listener");
                    tokio::spawn(serve_good(good, state, gc));
                    tokio::spawn(serve_hanging(hang, hc));
                    let _ = rx.await;
                });
                runtime.shutdown_timeout(Duration::from_secs(1));
            })?;
        Ok(BroadSite {
            tail,
            tail_released,
            served,
            config,
            port,
            dns_addr,
            records,
            dns_queries,
            hang_connections,
            good_connections,
            shutdown: Some(tx),
            thread: Some(thread),
            dns_thread: Some(dns_thread),
            dns_stop,
        })
    }

    /// The DNS server's address, for `DNS_NAMESERVERS`.
    pub fn dns_addr(&self) -> SocketAddr {
        self.dns_addr
    }

    /// The URL of a good host's page.
    pub fn url(&self, host: usize, path: &str) -> String {
        format!("http://h{host}.{SUFFIX}:{}{path}", self.port)
    }

    /// Every `(host, path)` requested so far.
    pub fn records(&self) -> Vec<(String, String)> {
        self.records.lock().expect("records").clone()
    }

    /// Lets `tail.broad.test/` answer (now and from now on).
    pub fn release_tail(&self) {
        self.tail_released.store(true, Ordering::SeqCst);
        self.tail.notify_waiters();
    }

    /// HTTP responses sent so far (recorded or not).
    pub fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }

    /// DNS questions answered so far.
    pub fn dns_queries(&self) -> u64 {
        self.dns_queries.load(Ordering::Relaxed)
    }

    /// Connections the hanging hosts accepted.
    pub fn hang_connections(&self) -> usize {
        self.hang_connections.load(Ordering::Relaxed)
    }

    /// Connections the good hosts accepted.
    pub fn good_connections(&self) -> usize {
        self.good_connections.load(Ordering::Relaxed)
    }

    /// The good pages a complete crawl from `h0` fetches: `(host, path)`.
    pub fn good_pages(&self) -> Vec<(String, String)> {
        (0..self.config.hosts)
            .flat_map(|h| {
                (0..self.config.pages).map(move |p| (format!("h{h}.{SUFFIX}"), page_path(p)))
            })
            .collect()
    }

    /// The hanging hosts some good page links to.
    pub fn linked_hanging_hosts(&self) -> usize {
        let c = &self.config;
        if c.hanging == 0 {
            return 0;
        }
        let linking = (0..c.hosts)
            .filter(|h| h % c.hang_every.max(1) == 0)
            .count();
        linking.min(c.hanging)
    }
}

impl Drop for BroadSite {
    fn drop(&mut self) {
        self.dns_stop.store(true, Ordering::Relaxed);
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if let Some(t) = self.dns_thread.take() {
            let _ = t.join();
        }
    }
}

fn page_path(p: usize) -> String {
    if p == 0 {
        "/".to_string()
    } else {
        format!("/p{p}")
    }
}

fn bind_pair(
    good_ip: IpAddr,
    hang_ip: IpAddr,
) -> io::Result<(std::net::TcpListener, std::net::TcpListener)> {
    let mut last = None;
    for _ in 0..50 {
        let good = std::net::TcpListener::bind(SocketAddr::new(good_ip, 0))?;
        let port = good.local_addr()?.port();
        match std::net::TcpListener::bind(SocketAddr::new(hang_ip, port)) {
            Ok(hang) => return Ok((good, hang)),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no port free on both addresses")))
}

struct State {
    tail: Arc<tokio::sync::Notify>,
    tail_released: Arc<std::sync::atomic::AtomicBool>,
    served: Arc<AtomicU64>,
    config: BroadConfig,
    port: u16,
    records: Arc<Mutex<Vec<(String, String)>>>,
}

/// A fixed hash, so every run serves the same graph.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl State {
    fn page(&self, host: &str, path: &str) -> (u16, String) {
        let c = &self.config;
        let n = host
            .strip_suffix(SUFFIX)
            .and_then(|h| h.strip_suffix('.'))
            .and_then(|h| h.strip_prefix('h'))
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|n| *n < c.hosts);
        let Some(n) = n else {
            return if host == format!("tail.{SUFFIX}") {
                (200, "<html><body>the end</body></html>".to_string())
            } else {
                (404, "no such host".to_string())
            };
        };
        if path == "/robots.txt" {
            return (404, "no robots.txt".to_string());
        }
        let known = (0..c.pages).any(|p| page_path(p) == path);
        if !known {
            return (404, "not found".to_string());
        }
        let mut body = String::from("<html><body>\n");
        if path == "/" {
            let port = self.port;
            for p in 1..c.pages {
                body.push_str(&format!("<a href=\"/p{p}\">p{p}</a>\n"));
            }
            let mut link = |h: usize| {
                body.push_str(&format!(
                    "<a href=\"http://h{h}.{SUFFIX}:{port}/\">h{h}</a>\n"
                ));
            };
            link((n + 1) % c.hosts);
            for k in 0..c.links {
                link((mix((n * 131 + k) as u64) % c.hosts as u64) as usize);
            }
            if c.hanging > 0 && n % c.hang_every.max(1) == 0 {
                let h = (n / c.hang_every.max(1)) % c.hanging;
                for p in ["/", "/p1", "/p2"] {
                    body.push_str(&format!(
                        "<a href=\"http://hang{h}.{SUFFIX}:{port}{p}\">hang</a>\n"
                    ));
                }
            }
        }
        body.push_str("</body></html>\n");
        (200, body)
    }
}

async fn serve_good(
    listener: tokio::net::TcpListener,
    state: Arc<State>,
    connections: Arc<AtomicUsize>,
) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        connections.fetch_add(1, Ordering::Relaxed);
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let state = state.clone();
                async move {
                    let host = req
                        .headers()
                        .get(hyper::header::HOST)
                        .and_then(|h| h.to_str().ok())
                        .map(|h| {
                            h.rsplit_once(':')
                                .map_or(h, |(h, _)| h)
                                .to_ascii_lowercase()
                        })
                        .unwrap_or_default();
                    let path = req.uri().path().to_string();
                    if host == format!("tail.{SUFFIX}") && path == "/" {
                        let wait = state.tail.notified();
                        if !state.tail_released.load(Ordering::SeqCst) {
                            wait.await;
                        }
                    }
                    if !state.config.latency.is_zero() {
                        tokio::time::sleep(state.config.latency).await;
                    }
                    let (status, body) = state.page(&host, &path);
                    state.served.fetch_add(1, Ordering::Relaxed);
                    if state.config.record {
                        state.records.lock().expect("records").push((host, path));
                    }
                    let response = Response::builder()
                        .status(status)
                        .header("content-type", "text/html; charset=utf-8")
                        .body(Full::new(Bytes::from(body)))
                        .expect("response");
                    Ok::<_, Infallible>(response)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

async fn serve_hanging(listener: tokio::net::TcpListener, connections: Arc<AtomicUsize>) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        connections.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            // Read whatever comes and never answer, until the client gives up.
            let mut buf = [0u8; 4096];
            while let Ok(n) = stream.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
        });
    }
}

/// Answers A questions under [`SUFFIX`]; NXDOMAIN for any other name.
fn serve_dns(
    socket: UdpSocket,
    config: &BroadConfig,
    queries: &AtomicU64,
    stop: &std::sync::atomic::AtomicBool,
) {
    let mut buf = [0u8; 1500];
    while !stop.load(Ordering::Relaxed) {
        let Ok((n, peer)) = socket.recv_from(&mut buf) else {
            continue;
        };
        queries.fetch_add(1, Ordering::Relaxed);
        if let Some(reply) = dns_reply(&buf[..n], config) {
            let _ = socket.send_to(&reply, peer);
        }
    }
}

fn dns_reply(q: &[u8], config: &BroadConfig) -> Option<Vec<u8>> {
    if q.len() < 12 {
        return None;
    }
    // The question: labels, then type and class.
    let mut at = 12;
    let mut labels = Vec::new();
    loop {
        let len = *q.get(at)? as usize;
        at += 1;
        if len == 0 {
            break;
        }
        labels.push(String::from_utf8_lossy(q.get(at..at + len)?).to_ascii_lowercase());
        at += len;
    }
    let qtype = u16::from_be_bytes([*q.get(at)?, *q.get(at + 1)?]);
    let question_end = at + 4;
    q.get(..question_end)?;
    let name = labels.join(".");
    let target = name
        .strip_suffix(SUFFIX)
        .and_then(|h| h.strip_suffix('.'))
        .and_then(|h| {
            if h.starts_with("hang") {
                Some(config.hang_ip)
            } else if h.starts_with('h') || h == "tail" {
                Some(config.good_ip)
            } else {
                None
            }
        });
    let mut r = Vec::with_capacity(question_end + 16);
    r.extend_from_slice(&q[..2]); // id
    let rd = q[2] & 0x01;
    r.push(0x84 | rd); // QR, AA, RD as asked
    let rcode = if target.is_some() { 0 } else { 3 }; // NXDOMAIN
    r.push(0x80 | rcode); // RA
    r.extend_from_slice(&[0, 1]); // one question
    let answer = match (target, qtype) {
        (Some(IpAddr::V4(ip)), 1) => Some(ip),
        _ => None,
    };
    r.extend_from_slice(&[0, u8::from(answer.is_some())]);
    // NXDOMAIN carries the zone's SOA, whose minimum is the negative TTL (RFC 2308).
    r.extend_from_slice(&[0, u8::from(target.is_none()), 0, 0]);
    r.extend_from_slice(&q[12..question_end]);
    if let Some(ip) = answer {
        r.extend_from_slice(&[0xc0, 12]); // the question's name
        r.extend_from_slice(&[0, 1, 0, 1]); // A, IN
        r.extend_from_slice(&600u32.to_be_bytes()); // TTL
        r.extend_from_slice(&[0, 4]);
        r.extend_from_slice(&ip.octets());
    }
    if target.is_none() {
        r.push(0); // the root zone
        r.extend_from_slice(&[0, 6, 0, 1]); // SOA, IN
        r.extend_from_slice(&300u32.to_be_bytes()); // TTL
        r.extend_from_slice(&[0, 22]);
        r.extend_from_slice(&[0, 0]); // mname ".", rname "."
        for v in [1u32, 3600, 600, 86400, 300] {
            r.extend_from_slice(&v.to_be_bytes()); // serial, refresh, retry, expire, minimum
        }
    }
    Some(r)
}
