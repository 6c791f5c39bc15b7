//! The downloader: fetches a request over HTTP/1.1 (hyper's connection
//! layer, with our own pool and connector) and reads its body within the
//! size and time limits. Politeness (slots, caps, delays) is decided before
//! a request gets here, by the scheduler; the one part of it that acts here
//! is the send gate, which holds a request's first write at its socket.

mod connect;
mod decode;
pub mod dns;
pub mod fdlimit;
pub mod gate;
mod pool;
pub mod slot;
mod wire;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::header::{HeaderValue, ACCEPT, CONTENT_LENGTH, HOST, USER_AGENT};
use http_body_util::{BodyExt, Full};

use crate::request::Request;
use crate::response::Response;
use crate::settings::Settings;
use connect::{Connector, Origin};
use dns::Resolver;
use pool::{Conn, Pool};
use slot::Pacing;

/// Why a download produced no response. Each kind is counted under its own
/// `downloader/exception_type_count/<kind>` stat.
#[derive(Debug, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum DownloadError {
    /// The whole request took longer than its timeout.
    #[error("timed out after {0:?} (DOWNLOAD_TIMEOUT)")]
    Timeout(std::time::Duration),
    /// No connection could be made (refused, unreachable, DNS).
    #[error("cannot connect: {0}")]
    Connect(String),
    /// The server reset or closed the connection mid-exchange.
    #[error("connection reset: {0}")]
    ConnectionReset(String),
    /// The body ended before its declared length.
    #[error("body ended before its declared length: {0}")]
    PartialBody(String),
    /// The response head was larger than the client accepts.
    #[error("response header too large: {0}")]
    HeaderTooLarge(String),
    /// The response was not valid HTTP.
    #[error("invalid HTTP response: {0}")]
    InvalidResponse(String),
    /// The compressed body could not be decoded.
    #[error("cannot decompress the body: {0}")]
    Decompression(String),
    /// The body grew past `DOWNLOAD_MAXSIZE`.
    #[error("body larger than DOWNLOAD_MAXSIZE ({0} bytes, counted after decompression)")]
    TooLarge(u64),
    /// The host name does not resolve (or its name servers did not answer).
    #[error("DNS lookup failed: {0}")]
    DnsLookup(String),
    /// This process ran out of file descriptors (EMFILE/ENFILE) in connect
    /// or DNS. The crawler's fault, not the site's: the engine waits and
    /// tries the request again, and it is never passed to the middlewares.
    #[error("out of file descriptors: {0}")]
    LocalResources(String),
    /// Any other client error, with its text.
    #[error("{0}")]
    Other(String),
}

impl DownloadError {
    /// The name used in `downloader/exception_type_count/<kind>`.
    pub fn kind(&self) -> &'static str {
        match self {
            DownloadError::Timeout(_) => "TimeoutError",
            DownloadError::Connect(_) => "ConnectError",
            DownloadError::ConnectionReset(_) => "ConnectionResetError",
            DownloadError::PartialBody(_) => "PartialDownloadError",
            DownloadError::HeaderTooLarge(_) => "HeaderTooLargeError",
            DownloadError::InvalidResponse(_) => "InvalidResponseError",
            DownloadError::Decompression(_) => "DecompressionError",
            DownloadError::TooLarge(_) => "DownloadMaxSizeError",
            DownloadError::DnsLookup(_) => "DNSLookupError",
            DownloadError::LocalResources(_) => "LocalResourceError",
            DownloadError::Other(_) => "HttpError",
        }
    }

    /// Whether trying again could help: network trouble, not a response that is wrong by design.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            DownloadError::Timeout(_)
                | DownloadError::Connect(_)
                | DownloadError::ConnectionReset(_)
                | DownloadError::PartialBody(_)
                | DownloadError::Other(_)
        )
    }

    /// Whether the host looks dead: timeouts and failed connections,
    /// counted against a slot's `SLOT_MAX_EXCEPTIONS`.
    pub fn is_site_failure(&self) -> bool {
        matches!(self, DownloadError::Timeout(_) | DownloadError::Connect(_))
    }

    /// What went wrong in sending a request or reading its response, from
    /// hyper's and the system's errors.
    fn classify(e: &(dyn std::error::Error + 'static), timeout: std::time::Duration) -> Self {
        let text = error_chain(e);
        if dns::is_fd_exhaustion(e) {
            return DownloadError::LocalResources(text);
        }
        let mut source = Some(e);
        while let Some(err) = source {
            if let Some(h) = err.downcast_ref::<hyper::Error>() {
                // `is_parse_too_large` exists only with hyper's server feature.
                if h.is_parse() && h.to_string().contains("too large") {
                    return DownloadError::HeaderTooLarge(text);
                }
                if h.is_incomplete_message() {
                    return DownloadError::PartialBody(text);
                }
                if h.is_parse() {
                    return DownloadError::InvalidResponse(text);
                }
                if h.is_canceled() {
                    return DownloadError::ConnectionReset(text);
                }
            }
            if let Some(io) = err.downcast_ref::<std::io::Error>() {
                use std::io::ErrorKind::*;
                match io.kind() {
                    ConnectionReset | ConnectionAborted | BrokenPipe => {
                        return DownloadError::ConnectionReset(text)
                    }
                    UnexpectedEof => return DownloadError::PartialBody(text),
                    TimedOut => return DownloadError::Timeout(timeout),
                    _ => {}
                }
            }
            source = err.source();
        }
        DownloadError::Other(text)
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// How long before its slot's gate opens a request goes to its connection
/// to wait there: more than the way from here to the socket takes on a busy
/// machine (a few milliseconds), so the write follows the opening at once.
const GATE_LEAD: Duration = Duration::from_millis(20);

/// Fetches requests; one per crawl (or per worker process), shared by its tasks.
pub struct Downloader {
    connector: Connector,
    pool: Pool,
    settings: Arc<Settings>,
    user_agent: Option<HeaderValue>,
}

/// Whether a request that hyper could not send may be tried on a fresh connection.
enum Sent {
    Answered(http::Response<hyper::body::Incoming>, Conn),
    /// A reused connection turned out closed before the request was written.
    Stale(http::Request<Full<Bytes>>),
}

impl Downloader {
    /// A downloader whose connections resolve host names through `resolver`.
    pub fn new(settings: Arc<Settings>, resolver: Arc<Resolver>) -> Self {
        // Keep as many idle connections per origin as the slot may use at
        // once; in all, enough for the global cap twice over.
        let per_origin = settings.default_slot_concurrency().max(1);
        let total = (settings.concurrent_requests * 2).max(per_origin).max(64);
        Downloader {
            connector: Connector::new(resolver),
            pool: Pool::new(per_origin, total),
            user_agent: HeaderValue::from_str(&settings.user_agent).ok(),
            settings,
        }
    }

    /// Sends the request (method, headers, body) and reads the whole body.
    /// With `pacing`, the request's first write waits at its slot's send
    /// gate, at the socket.
    pub async fn fetch(
        &self,
        request: Request,
        pacing: Option<Pacing>,
    ) -> Result<Response, (Request, DownloadError)> {
        if let Some(pacing) = &pacing {
            // A long wait is spent here rather than on a connection the
            // server might close meanwhile; the last stretch, at the socket.
            let wait = pacing.gate.wait_hint();
            if wait > 2 * GATE_LEAD {
                tokio::time::sleep(wait - GATE_LEAD).await;
            }
        }
        let called = Instant::now();
        let timeout = request.timeout.unwrap_or(self.settings.download_timeout);
        // The request is handed to its connection at once and waits for the
        // gate at the socket, so that its write follows the gate's opening
        // without the way here in between (which, under load, would add
        // itself to every gap). A new connection is opened meanwhile. The
        // timeout counts from when the gate is expected to open.
        let gate_wait = pacing
            .as_ref()
            .map_or(Duration::ZERO, |p| p.gate.wait_hint());
        let deadline = tokio::time::Instant::now() + gate_wait + timeout;
        let exchange = tokio::time::timeout_at(deadline, self.exchange(&request, pacing, timeout));
        // Latencies count from the request's first write, so that the send
        // gate's wait is not taken for the server's slowness (AutoThrottle).
        let mut sent = called;
        let result = match exchange.await {
            Err(_) => Err(DownloadError::Timeout(timeout)),
            Ok(Err(e)) => Err(e),
            Ok(Ok((head, origin, conn))) => {
                sent = conn.arming.sent_at().unwrap_or(called);
                // AutoThrottle's latency, as Scrapy's: until the headers arrived.
                let headers_latency = sent.elapsed();
                let read = self.read_body(head, origin, conn, timeout);
                match tokio::time::timeout_at(deadline, read).await {
                    Err(_) => Err(DownloadError::Timeout(timeout)),
                    Ok(Err(e)) => Err(e),
                    Ok(Ok((status, headers, body))) => Ok((status, headers, body, headers_latency)),
                }
            }
        };
        match result {
            Ok((status, headers, body, headers_latency)) => Ok(Response {
                url: request.url.clone(),
                status,
                headers,
                body,
                request,
                latency: sent.elapsed(),
                headers_latency,
            }),
            Err(e) => Err((request, e)),
        }
    }

    /// Sends the request and waits for the response head.
    async fn exchange(
        &self,
        request: &Request,
        pacing: Option<Pacing>,
        timeout: Duration,
    ) -> Result<(http::Response<hyper::body::Incoming>, Origin, Conn), DownloadError> {
        let origin = Origin::of(&request.url, request.proxy.as_ref())?;
        let mut message = self.message(request, &origin)?;
        // A pooled connection the server closed while idle costs one more
        // try; after two such, a new connection. Only a reused connection
        // gives the request back unsent, so the third try is the last.
        let mut stale = 0;
        loop {
            let pooled = if stale < 2 {
                self.pool.take(&origin)
            } else {
                None
            };
            let conn = match pooled {
                Some(conn) => conn,
                None => self.open(&origin).await?,
            };
            match send(conn, message, pacing.clone()).await {
                Ok(Sent::Answered(head, conn)) => return Ok((head, origin, conn)),
                Ok(Sent::Stale(back)) => {
                    message = back;
                    stale += 1;
                }
                Err(e) => return Err(DownloadError::classify(&e, timeout)),
            }
        }
    }

    /// A new connection to `origin`, its hyper task running on the runtime.
    async fn open(&self, origin: &Origin) -> Result<Conn, DownloadError> {
        let arming = Arc::new(wire::Arming::default());
        let stream = self.connector.connect(origin, arming.clone()).await?;
        let (sender, connection) = hyper::client::conn::http1::Builder::new()
            .handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| DownloadError::Connect(error_chain(&e)))?;
        tokio::spawn(async move {
            // Its errors reach the request that was on it; nothing to do here.
            let _ = connection.await;
        });
        Ok(Conn {
            sender,
            arming,
            reused: false,
        })
    }

    /// The request as hyper sends it: the target in origin form (absolute
    /// form to a plain-HTTP proxy), and the headers a client adds unless the
    /// request set them.
    fn message(
        &self,
        request: &Request,
        origin: &Origin,
    ) -> Result<http::Request<Full<Bytes>>, DownloadError> {
        let url = &request.url;
        let target = if origin.via_http_proxy() {
            url[..url::Position::AfterQuery].to_string()
        } else {
            url[url::Position::BeforePath..url::Position::AfterQuery].to_string()
        };
        let mut message = http::Request::builder()
            .method(request.method.clone())
            .uri(target)
            .body(Full::new(request.body.clone()))
            .map_err(|e| DownloadError::Other(format!("cannot send {url}: {e}")))?;
        let headers = message.headers_mut();
        *headers = request.headers.clone();
        if !headers.contains_key(HOST) {
            let host = match url.port() {
                Some(port) => format!("{}:{port}", origin.host),
                None => origin.host.clone(),
            };
            let value = HeaderValue::from_str(&host)
                .map_err(|e| DownloadError::Other(format!("host {host}: {e}")))?;
            headers.insert(HOST, value);
        }
        if !headers.contains_key(USER_AGENT) {
            if let Some(ua) = &self.user_agent {
                headers.insert(USER_AGENT, ua.clone());
            }
        }
        if !headers.contains_key(ACCEPT) {
            headers.insert(ACCEPT, HeaderValue::from_static("*/*"));
        }
        decode::ask_for_encodings(headers);
        if origin.via_http_proxy() {
            if let Some(auth) = origin.proxy.as_ref().and_then(connect::proxy_authorization) {
                if let Ok(value) = HeaderValue::from_str(&auth) {
                    headers.insert(http::header::PROXY_AUTHORIZATION, value);
                }
            }
        }
        Ok(message)
    }

    /// Reads the whole body within `DOWNLOAD_MAXSIZE`, decodes it, and gives
    /// the connection back to the pool once the exchange ended cleanly.
    async fn read_body(
        &self,
        head: http::Response<hyper::body::Incoming>,
        origin: Origin,
        conn: Conn,
        timeout: std::time::Duration,
    ) -> Result<(u16, http::HeaderMap, Bytes), DownloadError> {
        let max = self.settings.download_maxsize;
        let (parts, mut incoming) = head.into_parts();
        let declared = parts
            .headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if max > 0 && declared.is_some_and(|n| n > max) {
            return Err(DownloadError::TooLarge(max));
        }
        let mut body = BytesMut::with_capacity(declared.unwrap_or(0).min(1 << 20) as usize);
        while let Some(frame) = incoming.frame().await {
            let frame = frame.map_err(|e| DownloadError::classify(&e, timeout))?;
            if let Ok(chunk) = frame.into_data() {
                if max > 0 && (body.len() + chunk.len()) as u64 > max {
                    return Err(DownloadError::TooLarge(max));
                }
                body.extend_from_slice(&chunk);
            }
        }
        self.pool.put(origin, conn);
        let mut headers = parts.headers;
        let body = decode::decode(&mut headers, body.freeze(), max)?;
        Ok((parts.status.as_u16(), headers, body))
    }
}

/// Arms the connection's gate with the request's pacing and sends it.
async fn send(
    mut conn: Conn,
    message: http::Request<Full<Bytes>>,
    pacing: Option<Pacing>,
) -> Result<Sent, hyper::Error> {
    if let Err(e) = conn.sender.ready().await {
        if conn.reused {
            return Ok(Sent::Stale(message));
        }
        return Err(e);
    }
    conn.arming.arm(pacing);
    match conn.sender.try_send_request(message).await {
        Ok(head) => Ok(Sent::Answered(head, conn)),
        Err(mut e) => match e.take_message() {
            Some(message) if conn.reused => Ok(Sent::Stale(message)),
            _ => Err(e.into_error()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::downloader::gate::SendGate;
    use spindle_testsite::{Site, TestServer};
    use std::collections::HashMap;

    fn downloader(server: &TestServer) -> Downloader {
        let fixed: HashMap<String, std::net::IpAddr> = server
            .resolve_map()
            .into_iter()
            .map(|(host, addr)| (host, addr.ip()))
            .collect();
        Downloader::new(
            Arc::new(Settings::default()),
            Arc::new(Resolver::with_fixed(fixed)),
        )
    }

    #[tokio::test]
    async fn connections_are_reused_and_the_gate_spaces_writes() {
        let server = TestServer::builder()
            .host("a.test", [127, 0, 0, 1], Site::generated(10))
            .start()
            .unwrap();
        let downloader = downloader(&server);
        let gate = SendGate::default();
        let pacing = Pacing {
            gate: gate.clone(),
            gap: Duration::from_millis(40),
            floor: Duration::from_millis(40),
        };
        for i in 0..3 {
            let url = server.url("a.test", &format!("/?visit={i}"));
            let request = Request::get(&url).unwrap();
            let response = downloader
                .fetch(request, Some(pacing.clone()))
                .await
                .map_err(|(_, e)| e)
                .unwrap();
            assert_eq!(response.status, 200);
            assert!(!response.body.is_empty());
            assert_eq!(downloader.pool.idle_count(), 1, "one connection, kept");
        }
        assert_eq!(
            server.accepted_connections(),
            1,
            "three requests on one connection"
        );
        assert!(gate.min_gap().unwrap() >= Duration::from_millis(40));
        // And at the server, as the kernel stamped the arrivals: the delay is a floor.
        let mut starts: Vec<Duration> = server.records().iter().map(|r| r.start).collect();
        starts.sort();
        assert_eq!(starts.len(), 3);
        for pair in starts.windows(2) {
            assert!(pair[1] - pair[0] >= Duration::from_millis(40), "{starts:?}");
        }
    }

    #[tokio::test]
    async fn a_plain_http_proxy_gets_the_absolute_form() {
        let server = TestServer::builder()
            .host("a.test", [127, 0, 0, 1], Site::generated(10))
            .start()
            .unwrap();
        // No mapping for a.test: only the proxy's address is ever connected to.
        let downloader = Downloader::new(
            Arc::new(Settings::default()),
            Arc::new(Resolver::with_fixed(HashMap::new())),
        );
        let addr = server.addr_of("a.test");
        let mut request = Request::get(&server.url("a.test", "/?via=proxy")).unwrap();
        request.proxy = Some(format!("http://user:p%40ss@{addr}").parse().unwrap());
        let response = downloader
            .fetch(request, None)
            .await
            .map_err(|(_, e)| e)
            .unwrap();
        assert_eq!(response.status, 200);
        let records = server.records();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].host, "a.test");
        assert_eq!(records[0].path, "/?via=proxy");
        assert_eq!(
            connect::proxy_authorization(&"http://user:p%40ss@x".parse().unwrap()).unwrap(),
            "Basic dXNlcjpwQHNz"
        );
    }
}
