//! A hostile HTTP server: every way a server can misbehave, one path each,
//! written on raw TCP so it can break the protocol in ways a real HTTP
//! library refuses to.
//!
//! It answers any host name. Two names change how `/robots.txt` behaves:
//! `robots503.<anything>` answers 503 there, `norobots.<anything>` 404;
//! every other host gets [`FaultServer::ROBOTS`].
//!
//! | path | behaviour |
//! |---|---|
//! | `/` | an index linking to every path below |
//! | `/good/<name>` | a normal page (its title is the name) |
//! | `/private/<name>` | a normal page that robots.txt disallows |
//! | `/reset` | resets the connection after reading the request |
//! | `/reset-mid-body` | declares 100,000 bytes, sends 100, resets |
//! | `/short-body` | declares 1,000 bytes, sends 10, closes |
//! | `/hang` | reads the request and never answers |
//! | `/trickle` | sends headers, then one byte of body every 100 ms |
//! | `/endless` | a chunked body that never ends |
//! | `/bomb` | 64 MiB of zeros, gzip-compressed to ~64 KiB |
//! | `/giant-header` | a 1 MiB header line |
//! | `/flaky` | 500 on the first request, 200 after |
//! | `/ratelimited` | 429 with `Retry-After: 2` on the first request, 200 after |
//! | `/redirect-loop` | 302 to `/redirect-loop-2`, which redirects back |
//! | `/offsite-redirect` | 302 to `http://elsewhere.test/` |
//! | `/binary` | `application/octet-stream` bytes that contain an `<a href>` |
//! | `/deep` | 100,000 nested `<div>`s around a link |
//! | `/many-links` | 300,000 links, all to pages already known or unfollowable |
//! | `/bad-urls` | `javascript:`, `mailto:`, `data:`, malformed and 10 KB URLs, and one good link |
//! | `/bad-bytes` | invalid UTF-8 around a link |
//! | `/latin1` | a windows-1252 page titled "café" |

use std::collections::HashMap;
use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

use crate::Record;

/// The good pages the index links to; a crawl must fetch each exactly once.
pub const GOOD_PAGES: usize = 10;

pub struct FaultServer {
    addr: SocketAddr,
    epoch: Instant,
    records: Arc<Mutex<Vec<Record>>>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Default)]
struct Shared {
    records: Arc<Mutex<Vec<Record>>>,
    hits: Mutex<HashMap<String, usize>>,
}

impl FaultServer {
    /// robots.txt for every host but the two special ones.
    pub const ROBOTS: &'static str = "User-agent: *\nDisallow: /private\nCrawl-delay: 0.25\n";

    /// Every path the index links to, besides the good pages.
    pub const FAULTS: &'static [&'static str] = &[
        "/reset",
        "/reset-mid-body",
        "/short-body",
        "/hang",
        "/trickle",
        "/endless",
        "/bomb",
        "/giant-header",
        "/flaky",
        "/ratelimited",
        "/redirect-loop",
        "/offsite-redirect",
        "/binary",
        "/deep",
        "/many-links",
        "/bad-urls",
        "/bad-bytes",
        "/latin1",
        "/private/secret",
    ];

    pub fn start(ip: impl Into<IpAddr>) -> io::Result<FaultServer> {
        heavy_pages();
        crate::arrival::ready()?;
        let std_listener = std::net::TcpListener::bind(SocketAddr::new(ip.into(), 0))?;
        std_listener.set_nonblocking(true)?;
        crate::arrival::enable(&std_listener)?;
        let addr = std_listener.local_addr()?;
        let epoch = Instant::now();
        let shared = Arc::new(Shared::default());
        let records = shared.records.clone();
        let (stop, stopped) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("spindle-faultserver".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("fault server runtime");
                rt.block_on(async move {
                    let listener = TcpListener::from_std(std_listener).expect("listener");
                    tokio::select! {
                        _ = stopped => {}
                        _ = accept_loop(listener, shared, epoch) => {}
                    }
                });
                rt.shutdown_timeout(Duration::from_millis(100));
            })?;
        Ok(FaultServer {
            addr,
            epoch,
            records,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://host:port/path` for any host name mapped to this server.
    pub fn url(&self, host: &str, path: &str) -> String {
        format!("http://{host}:{}{path}", self.addr.port())
    }

    /// `--resolve` arguments sending these host names here.
    pub fn resolve_args(&self, hosts: &[&str]) -> Vec<String> {
        hosts
            .iter()
            .map(|h| format!("{h}:{}:{}", self.addr.port(), self.addr.ip()))
            .collect()
    }

    pub fn records(&self) -> Vec<Record> {
        let mut r = self.records.lock().expect("records").clone();
        r.sort_by_key(|r| (r.start, r.end));
        r
    }

    pub fn epoch(&self) -> Instant {
        self.epoch
    }
}

impl Drop for FaultServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, epoch: Instant) {
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let _ = serve_connection(stream, peer, shared, epoch).await;
        });
    }
}

struct Head {
    host: String,
    path: String,
    /// When its first bytes arrived, by the kernel's stamp.
    arrived: Instant,
}

/// Reads one request head; `None` when the client closed the connection.
/// `arrived` is when the bytes already in `buf` came, if any.
async fn read_head(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    arrived: &mut Option<Instant>,
) -> io::Result<Option<Head>> {
    let mut latest = None;
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            buf.drain(..end + 4);
            let mut lines = head.lines();
            let path = lines
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .unwrap_or("/")
                .to_string();
            let host = lines
                .filter_map(|l| l.split_once(':'))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("host"))
                .map(|(_, v)| {
                    v.trim()
                        .rsplit_once(':')
                        .map_or(v.trim(), |(h, _)| h)
                        .to_ascii_lowercase()
                })
                .unwrap_or_default();
            let first = arrived.take().unwrap_or_else(Instant::now);
            if !buf.is_empty() {
                // A pipelined request: its first bytes came with the last read.
                *arrived = latest.or(Some(first));
            }
            return Ok(Some(Head {
                host,
                path,
                arrived: first,
            }));
        }
        let mut chunk = [0u8; 4096];
        let (n, at) = crate::arrival::read(stream, &mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        arrived.get_or_insert(at);
        latest = Some(at);
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn serve_connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    epoch: Instant,
) -> io::Result<()> {
    let local = stream.local_addr()?;
    let mut buf = Vec::new();
    let mut arrived = None;
    loop {
        let Some(head) = read_head(&mut stream, &mut buf, &mut arrived).await? else {
            return Ok(());
        };
        let start = head.arrived.saturating_duration_since(epoch);
        let hit = {
            let mut hits = shared.hits.lock().expect("hits");
            let n = hits
                .entry(format!("{}{}", head.host, head.path))
                .or_insert(0);
            *n += 1;
            *n
        };
        let (status, open) = respond(stream, &head, hit).await;
        shared.records.lock().expect("records").push(Record {
            host: head.host,
            path: head.path,
            local_addr: local,
            peer_addr: peer,
            start,
            end: epoch.elapsed(),
            status,
            // The fault server reads the request line and Host only.
            method: String::new(),
            headers: Vec::new(),
            body: Vec::new(),
        });
        match open {
            Some(s) => stream = s,
            None => return Ok(()),
        }
    }
}

fn response(status: u16, content_type: &str, extra: &str, body: &[u8]) -> Vec<u8> {
    let reason = match status {
        200 => "OK",
        302 => "Found",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Whatever",
    };
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{extra}\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

fn html(body: &str) -> Vec<u8> {
    response(200, "text/html; charset=utf-8", "", body.as_bytes())
}

fn good_page(name: &str) -> String {
    format!("<html><head><title>{name}</title></head><body><h1>{name}</h1></body></html>")
}

fn index() -> String {
    let mut page = String::from("<html><head><title>index</title></head><body>");
    for i in 0..GOOD_PAGES {
        page.push_str(&format!("<a href=\"/good/{i}\">good {i}</a>\n"));
    }
    for path in FaultServer::FAULTS {
        page.push_str(&format!("<a href=\"{path}\">{path}</a>\n"));
    }
    page.push_str("</body></html>");
    page
}

/// The large responses, built once before the server listens: built on
/// demand, they would hold a server thread for a while, and the records of
/// requests arriving meanwhile would be stamped late.
fn heavy_pages() -> &'static HashMap<&'static str, Vec<u8>> {
    static PAGES: OnceLock<HashMap<&'static str, Vec<u8>>> = OnceLock::new();
    PAGES.get_or_init(|| {
        let mut pages = HashMap::new();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..64 {
            gz.write_all(&zeros).expect("compress in memory");
        }
        let bomb = gz.finish().expect("compress in memory");
        pages.insert(
            "/bomb",
            response(200, "text/html", "Content-Encoding: gzip\r\n", &bomb),
        );

        let mut body: Vec<u8> = (0..50_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        body.extend_from_slice(b"<a href=\"/good/never-from-binary\">x</a>");
        pages.insert(
            "/binary",
            response(200, "application/octet-stream", "", &body),
        );

        let mut deep = "<div>".repeat(100_000);
        deep.push_str("<a href=\"/good/from-deep\">deep</a>");
        pages.insert("/deep", html(&deep));

        let mut many = String::with_capacity(300_000 * 30);
        for i in 0..300_000 {
            match i % 3 {
                0 => many.push_str("<a href=\"/good/0\">0</a>"),
                1 => many.push_str("<a href=\"/\">index</a>"),
                _ => many.push_str("<a href=\"javascript:void(0)\">js</a>"),
            }
        }
        many.push_str("<a href=\"/good/from-many\">last</a>");
        pages.insert("/many-links", html(&many));
        pages
    })
}

fn heavy_page(path: &str) -> &'static [u8] {
    &heavy_pages()[path]
}

/// Abortive close: the peer sees a reset, not an orderly end.
fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}

/// Writes the response for one request; returns the status sent (0 for none)
/// and the connection, if it can serve another request.
async fn respond(mut stream: TcpStream, head: &Head, hit: usize) -> (u16, Option<TcpStream>) {
    let path = head.path.as_str();
    let host = head.host.as_str();
    let bytes: Vec<u8> = match path {
        "/robots.txt" if host.starts_with("robots503.") => {
            response(503, "text/plain", "", b"down for maintenance")
        }
        "/robots.txt" if host.starts_with("norobots.") => response(404, "text/plain", "", b"no"),
        "/robots.txt" => response(200, "text/plain", "", FaultServer::ROBOTS.as_bytes()),
        "/" => html(&index()),
        p if p.starts_with("/good/") || p.starts_with("/private/") => {
            html(&good_page(p.rsplit('/').next().unwrap_or("")))
        }
        "/reset" => {
            reset(stream);
            return (0, None);
        }
        "/reset-mid-body" => {
            let mut out =
                b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 100000\r\n\r\n"
                    .to_vec();
            out.extend_from_slice(&[b'x'; 100]);
            let _ = stream.write_all(&out).await;
            let _ = stream.flush().await;
            tokio::time::sleep(Duration::from_millis(50)).await;
            reset(stream);
            return (200, None);
        }
        "/short-body" => {
            let out = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 1000\r\n\r\n<p>short</p>".to_vec();
            let _ = stream.write_all(&out).await;
            let _ = stream.shutdown().await;
            return (200, None);
        }
        "/hang" => {
            // Hold the connection until the client gives up.
            let mut sink = [0u8; 1024];
            while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
            return (0, None);
        }
        "/trickle" => {
            let out =
                b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 1000000\r\n\r\n"
                    .to_vec();
            if stream.write_all(&out).await.is_err() {
                return (200, None);
            }
            for _ in 0..1_000_000 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                if stream.write_all(b"x").await.is_err() {
                    break;
                }
            }
            return (200, None);
        }
        "/endless" => {
            let out =
                b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nTransfer-Encoding: chunked\r\n\r\n"
                    .to_vec();
            if stream.write_all(&out).await.is_err() {
                return (200, None);
            }
            let chunk = format!("{:x}\r\n{}\r\n", 65536, "y".repeat(65536));
            while stream.write_all(chunk.as_bytes()).await.is_ok() {}
            return (200, None);
        }
        "/giant-header" => {
            let extra = format!("X-Giant: {}\r\n", "g".repeat(1 << 20));
            response(200, "text/html", &extra, b"<p>giant</p>")
        }
        "/flaky" if hit == 1 => response(500, "text/html", "", b"try again"),
        "/flaky" => html(&good_page("flaky")),
        "/ratelimited" if hit == 1 => {
            response(429, "text/html", "Retry-After: 2\r\n", b"slow down")
        }
        "/ratelimited" => html(&good_page("ratelimited")),
        "/redirect-loop" => response(302, "text/html", "Location: /redirect-loop-2\r\n", b""),
        "/redirect-loop-2" => response(302, "text/html", "Location: /redirect-loop\r\n", b""),
        "/offsite-redirect" => response(
            302,
            "text/html",
            "Location: http://elsewhere.test/\r\n",
            b"",
        ),
        "/binary" | "/deep" | "/many-links" | "/bomb" => heavy_page(path).to_vec(),
        "/bad-urls" => {
            let long = format!("/good/{}", "l".repeat(10_000));
            html(&format!(
                "<a href=\"javascript:alert(1)\">j</a><a href=\"mailto:a@b.test\">m</a>\
                 <a href=\"data:text/html,hi\">d</a><a href=\"http://[::1\">malformed</a>\
                 <a href=\"{long}\">long</a><a href=\"/good/from-bad-urls\">ok</a>"
            ))
        }
        "/bad-bytes" => {
            let mut body =
                b"<html><title>bad \xff\xfe bytes</title><p>\xc3\x28\xa0\xa1</p>".to_vec();
            body.extend_from_slice(b"<a href=\"/good/from-bad-bytes\">ok</a></html>");
            response(200, "text/html; charset=utf-8", "", &body)
        }
        "/latin1" => {
            let body = b"<html><head><title>caf\xe9</title></head><a href=\"/good/from-latin1\">ok</a></html>";
            response(200, "text/html; charset=windows-1252", "", body)
        }
        _ => response(404, "text/html", "", b"not here"),
    };
    let status = std::str::from_utf8(&bytes[9..12])
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let ok = stream.write_all(&bytes).await.is_ok() && stream.flush().await.is_ok();
    (status, ok.then_some(stream))
}
