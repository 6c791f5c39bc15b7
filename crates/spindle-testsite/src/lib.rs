//! An in-process HTTP/1.1 test server for spindle's tests, built to judge a
//! crawler's politeness *from the server's side*.
//!
//! * several loopback addresses (one listener, with an OS-chosen port, per address),
//!   each serving one or more host names (routed by the `Host` header);
//! * per-host [`Site`]s: generated link graphs or hand-made pages, with latency;
//! * a [`Record`] of every request (timings relative to [`TestServer::epoch`]);
//! * pure [`analysis`] helpers (max in flight, start gaps, duplicates, …).
//!
//! The server runs on its own thread with its own 2-worker tokio runtime, so it works
//! from plain `#[test]`s (e.g. running the `spindle` binary as a subprocess, passing
//! [`TestServer::resolve_args`] as `--resolve`) as well as from `#[tokio::test]`s.
//! Dropping the [`TestServer`] shuts it down.
//!
//! ```no_run
//! use spindle_testsite::{max_in_flight, Site, TestServer};
//! use std::net::Ipv4Addr;
//! use std::time::Duration;
//!
//! let server = TestServer::builder()
//!     .host("a.test", Ipv4Addr::new(127, 0, 0, 2), Site::generated(200).latency(Duration::from_millis(50)))
//!     .host("b.test", Ipv4Addr::new(127, 0, 0, 2), Site::generated(50))
//!     .start()
//!     .unwrap();
//! let start_url = server.url("a.test", "/");
//! // … crawl …
//! let records = server.records();
//! assert!(max_in_flight(records.iter().filter(|r| r.host == "a.test")) <= 2);
//! ```

use std::collections::HashMap;
use std::convert::Infallible;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt as _;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE, HOST};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::sync::oneshot;

pub mod analysis;
pub mod app;
pub mod arrival;
pub mod broad;
pub mod faults;
mod load;
pub mod site;

pub use analysis::{
    connections, count_by_path, duplicates, max_in_flight, max_in_flight_by_host,
    max_in_flight_by_ip, normalize_path, start_gaps,
};
pub use app::{HttpRequest, Shop};
pub use faults::FaultServer;
pub use load::{Load, LoadStats};
pub use site::{Page, Site};

/// One request as seen by the server.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Record {
    /// `Host` header without the port, lowercased (empty if absent).
    pub host: String,
    /// Path + query as received (request target; for absolute-form targets, the
    /// path and query part of it).
    pub path: String,
    /// The listener address the request came in on.
    pub local_addr: SocketAddr,
    /// The client's address (one per TCP connection).
    pub peer_addr: SocketAddr,
    /// Since [`TestServer::epoch`]: when the first bytes of the request
    /// arrived, stamped by the kernel (see [`arrival`]), so a server thread
    /// that gets the CPU late does not move it.
    pub start: Duration,
    /// Since [`TestServer::epoch`]: when the last byte of the response body was
    /// handed to hyper (the body stream ended). If the response was abandoned
    /// (client went away, server shut down), when that happened.
    pub end: Duration,
    /// Response status; 421 for a host not served on that address; 0 if the
    /// request was abandoned before a response was produced (e.g. the client
    /// disconnected during the latency wait).
    pub status: u16,
    /// The request method (`GET`, `POST`, …).
    pub method: String,
    /// Every request header, in arrival order, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The request body.
    pub body: Vec<u8>,
}

impl Record {
    /// The first value of a request header (name in any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        app::find_header(&self.headers, name)
    }
}

/// Builder for [`TestServer`]; see [`TestServer::builder`].
#[derive(Default)]
pub struct TestServerBuilder {
    hosts: Vec<(String, IpAddr, Site)>,
    no_records: bool,
}

impl TestServerBuilder {
    /// Serves `site` as host `name` on loopback address `ip` (e.g.
    /// `Ipv4Addr::new(127, 0, 0, 2)`). Hosts sharing an address share its listener.
    /// Host names are case-insensitive (stored lowercased).
    pub fn host(mut self, name: impl Into<String>, ip: impl Into<IpAddr>, site: Site) -> Self {
        self.hosts
            .push((name.into().to_ascii_lowercase(), ip.into(), site));
        self
    }

    /// Whether to keep a [`Record`] of every request (default true). A benchmark
    /// serving millions of requests turns it off, so the server's memory and locking
    /// stay flat; [`TestServer::records`] is then always empty.
    pub fn record(mut self, on: bool) -> Self {
        self.no_records = !on;
        self
    }

    /// Binds one listener per distinct address (port chosen by the OS) and starts
    /// serving on a background thread. Fails on binding errors, on a duplicate host
    /// name, or if no host was configured.
    pub fn start(self) -> io::Result<TestServer> {
        if self.hosts.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "no hosts configured",
            ));
        }
        arrival::ready()?;
        let epoch = Instant::now();
        let mut listeners: Vec<(IpAddr, std::net::TcpListener, SocketAddr)> = Vec::new();
        let mut hosts = Vec::new();
        for (name, ip, _) in &self.hosts {
            if hosts.iter().any(|h: &HostInfo| &h.name == name) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("host {name:?} configured twice"),
                ));
            }
            let addr = match listeners.iter().find(|l| l.0 == *ip) {
                Some(l) => l.2,
                None => {
                    let l = std::net::TcpListener::bind(SocketAddr::new(*ip, 0))?;
                    l.set_nonblocking(true)?;
                    arrival::enable(&l)?;
                    let addr = l.local_addr()?;
                    listeners.push((*ip, l, addr));
                    addr
                }
            };
            hosts.push(HostInfo {
                name: name.clone(),
                addr,
            });
        }

        let records: Arc<Mutex<Vec<Record>>> = Arc::default();
        let mut per_listener = Vec::new();
        for (ip, listener, addr) in listeners {
            let mut sites = HashMap::new();
            for (name, hip, site) in &self.hosts {
                if *hip == ip {
                    let origin = format!("http://{}:{}", name, addr.port());
                    sites.insert(
                        name.clone(),
                        Arc::new(HostSite {
                            site: site.clone(),
                            origin,
                        }),
                    );
                }
            }
            per_listener.push((listener, Arc::new(sites)));
        }

        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("spindle-testsite")
            .enable_all()
            .build()?;
        let (tx, rx) = oneshot::channel::<()>();
        let accepted: Arc<AtomicUsize> = Arc::default();
        let shared = Arc::new(Shared {
            epoch,
            records: records.clone(),
            accepted: accepted.clone(),
            recording: !self.no_records,
        });
        let thread = std::thread::Builder::new()
            .name("spindle-testsite".into())
            .spawn(move || {
                runtime.block_on(async move {
                    for (listener, sites) in per_listener {
                        match tokio::net::TcpListener::from_std(listener) {
                            Ok(l) => {
                                tokio::spawn(accept_loop(l, sites, shared.clone()));
                            }
                            Err(e) => eprintln!("spindle-testsite: listener setup failed: {e}"),
                        }
                    }
                    let _ = rx.await;
                });
                runtime.shutdown_timeout(Duration::from_secs(2));
            })?;

        Ok(TestServer {
            epoch,
            hosts,
            records,
            accepted,
            shutdown: Some(tx),
            thread: Some(thread),
        })
    }
}

struct HostInfo {
    name: String,
    addr: SocketAddr,
}

/// A running test server. Dropping it shuts the server down (open connections are
/// closed).
pub struct TestServer {
    epoch: Instant,
    hosts: Vec<HostInfo>,
    records: Arc<Mutex<Vec<Record>>>,
    accepted: Arc<AtomicUsize>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl TestServer {
    pub fn builder() -> TestServerBuilder {
        TestServerBuilder::default()
    }

    fn info(&self, host: &str) -> &HostInfo {
        let lower = host.to_ascii_lowercase();
        self.hosts
            .iter()
            .find(|h| h.name == lower)
            .unwrap_or_else(|| panic!("spindle-testsite: host {host:?} is not configured"))
    }

    /// `http://{host}:{port}{path}`; `path` should start with `/`.
    ///
    /// # Panics
    /// If `host` is not configured (same for [`port_of`](Self::port_of) and
    /// [`addr_of`](Self::addr_of)).
    pub fn url(&self, host: &str, path: &str) -> String {
        let h = self.info(host);
        format!("http://{}:{}{}", h.name, h.addr.port(), path)
    }

    /// The port of the listener serving `host`.
    pub fn port_of(&self, host: &str) -> u16 {
        self.info(host).addr.port()
    }

    /// The address of the listener serving `host`.
    pub fn addr_of(&self, host: &str) -> SocketAddr {
        self.info(host).addr
    }

    /// Configured host names, in the order they were added.
    pub fn hosts(&self) -> Vec<String> {
        self.hosts.iter().map(|h| h.name.clone()).collect()
    }

    /// `host:port:ip` for every host, in the order they were added (curl `--resolve`
    /// style).
    pub fn resolve_args(&self) -> Vec<String> {
        self.hosts
            .iter()
            .map(|h| format!("{}:{}:{}", h.name, h.addr.port(), h.addr.ip()))
            .collect()
    }

    /// `(host, listener address)` for every host, in the order they were added (for
    /// in-process resolvers).
    pub fn resolve_map(&self) -> Vec<(String, SocketAddr)> {
        self.hosts
            .iter()
            .map(|h| (h.name.clone(), h.addr))
            .collect()
    }

    /// Snapshot of all completed requests, sorted by start. A request appears once
    /// its response body has ended, i.e. just *before* the client can have read the
    /// last byte, so when a client has finished, its records are all there. Requests
    /// abandoned by the client appear when the server notices (status 0).
    pub fn records(&self) -> Vec<Record> {
        let mut v = lock(&self.records).clone();
        v.sort_by_key(|r| (r.start, r.end));
        v
    }

    /// Number of TCP connections accepted so far, over all listeners (including
    /// connections on which no request was ever sent; not reset by
    /// [`clear_records`](Self::clear_records)).
    pub fn accepted_connections(&self) -> usize {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Forgets all records so far.
    pub fn clear_records(&self) {
        lock(&self.records).clear();
    }

    /// The instant all record times are relative to (taken just before binding).
    pub fn epoch(&self) -> Instant {
        self.epoch
    }

    /// Time since [`epoch`](Self::epoch), on the same clock as record times.
    pub fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    /// Shuts the server down and waits for its thread (same as dropping it).
    pub fn shutdown(self) {}
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl std::fmt::Debug for TestServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestServer")
            .field("hosts", &self.resolve_args())
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

struct Shared {
    epoch: Instant,
    records: Arc<Mutex<Vec<Record>>>,
    accepted: Arc<AtomicUsize>,
    recording: bool,
}

struct HostSite {
    site: Site,
    origin: String,
}

type Sites = Arc<HashMap<String, Arc<HostSite>>>;

async fn accept_loop(listener: tokio::net::TcpListener, sites: Sites, shared: Arc<Shared>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(_) => {
                // e.g. too many open files: back off briefly rather than spin.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        shared.accepted.fetch_add(1, Ordering::Relaxed);
        let _ = stream.set_nodelay(true);
        let local = match stream.local_addr() {
            Ok(a) => a,
            Err(_) => continue,
        };
        let (stream, arrival) = arrival::StampedStream::new(stream);
        let conn = Arc::new(Conn {
            sites: sites.clone(),
            shared: shared.clone(),
            local,
            peer,
            arrival,
        });
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| handle(req, conn.clone()));
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

struct Conn {
    sites: Sites,
    shared: Arc<Shared>,
    local: SocketAddr,
    peer: SocketAddr,
    arrival: arrival::NextArrival,
}

/// Host header (or absolute-form authority) without port, lowercased.
fn host_of(req: &Request<Incoming>) -> String {
    let raw = req
        .headers()
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.uri().authority().map(|a| a.as_str().to_string()))
        .unwrap_or_default();
    let raw = raw.trim();
    let host = if raw.starts_with('[') {
        match raw.find(']') {
            Some(e) => &raw[..=e],
            None => raw,
        }
    } else {
        raw.rsplit_once(':').map_or(raw, |(h, _)| h)
    };
    host.to_ascii_lowercase()
}

async fn handle(
    req: Request<Incoming>,
    conn: Arc<Conn>,
) -> Result<Response<RecordingBody>, Infallible> {
    let epoch = conn.shared.epoch;
    let start = match conn.arrival.take() {
        Some(at) => at.saturating_duration_since(epoch),
        None => epoch.elapsed(),
    };
    let host = host_of(&req);
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| req.uri().to_string());
    let method = req.method().as_str().to_string();
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    // The body is read before answering: dynamic routes (a login form, a JSON
    // API) answer from it, and keep-alive needs it drained.
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes().to_vec())
        .unwrap_or_default();
    let request = HttpRequest {
        method: method.clone(),
        path: path.clone(),
        headers: headers.clone(),
        body: body.clone(),
    };
    let mut pending = Pending {
        shared: conn.shared.clone(),
        record: Some(Record {
            host: host.clone(),
            path: path.clone(),
            local_addr: conn.local,
            peer_addr: conn.peer,
            start,
            end: start,
            status: 0,
            method,
            headers,
            body,
        }),
    };

    let (status, content_type, headers, body) = match conn.sites.get(&host) {
        None => (
            421,
            site::HTML.to_string(),
            Vec::new(),
            format!(
                "<html><head><title>Misdirected Request</title></head>\
                 <body><h1>421 Misdirected Request</h1><p>host {host:?} is not served on {}</p></body></html>\n",
                conn.local
            ),
        ),
        Some(hs) => {
            let latency = hs.site.get_latency();
            if !latency.is_zero() {
                tokio::time::sleep(latency).await;
            }
            if let Some(load) = hs.site.get_load() {
                load.serve().await;
            }
            let page = hs.site.answer(&request, &hs.origin);
            (page.status, page.content_type, page.headers, page.body)
        }
    };

    if let Some(r) = pending.record.as_mut() {
        r.status = status;
    }
    let bytes = Bytes::from(body);
    let len = bytes.len();
    let mut resp = Response::new(RecordingBody {
        data: (!bytes.is_empty()).then_some(bytes),
        len: len as u64,
        pending,
    });
    *resp.status_mut() =
        hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&content_type) {
        h.insert(CONTENT_TYPE, v);
    }
    h.insert(CONTENT_LENGTH, HeaderValue::from(len));
    for (k, v) in headers {
        if let (Ok(k), Ok(v)) = (
            hyper::header::HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(&v),
        ) {
            h.append(k, v);
        }
    }
    Ok(resp)
}

/// A record waiting for its end time; pushed exactly once, at the latest on drop.
struct Pending {
    shared: Arc<Shared>,
    record: Option<Record>,
}

impl Pending {
    fn finish(&mut self) {
        if let Some(mut r) = self.record.take() {
            if !self.shared.recording {
                return;
            }
            r.end = self.shared.epoch.elapsed().max(r.start);
            lock(&self.shared.records).push(r);
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.finish();
    }
}

/// A one-chunk body that records the end time when its last byte is handed to hyper.
struct RecordingBody {
    data: Option<Bytes>,
    len: u64,
    pending: Pending,
}

impl Body for RecordingBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        let frame = this.data.take();
        // The last (only) chunk is being handed over now, or the stream ends here.
        this.pending.finish();
        Poll::Ready(frame.map(|d| Ok(Frame::data(d))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(if self.data.is_some() { self.len } else { 0 })
    }
}
