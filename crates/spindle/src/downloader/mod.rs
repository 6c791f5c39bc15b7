//! The downloader: one shared HTTP client that fetches a request and reads
//! its body within the size and time limits. Politeness (slots, caps,
//! delays) is decided before a request gets here, by the scheduler.

pub mod dns;
pub mod fdlimit;
pub mod gate;
pub mod slot;

use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;

use crate::request::Request;
use crate::response::Response;
use crate::settings::Settings;
use dns::{Resolver, SharedResolver};

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

    fn from_reqwest(e: reqwest::Error, timeout: std::time::Duration) -> Self {
        let text = error_chain(&e);
        if e.is_timeout() {
            return DownloadError::Timeout(timeout);
        }
        if dns::is_fd_exhaustion(&e) {
            return DownloadError::LocalResources(text);
        }
        let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(&e);
        while let Some(err) = source {
            if err.downcast_ref::<dns::DnsError>().is_some() {
                return DownloadError::DnsLookup(text);
            }
            source = err.source();
        }
        let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(&e);
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
        if e.is_decode() {
            DownloadError::Decompression(text)
        } else if e.is_connect() {
            DownloadError::Connect(text)
        } else {
            DownloadError::Other(text)
        }
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

/// Fetches requests over one shared HTTP client (one more per proxy in use).
pub struct Downloader {
    client: reqwest::Client,
    /// Clients for requests that name a proxy, built on first use: reqwest
    /// binds a proxy to a client, not to a request.
    proxied: std::sync::Mutex<std::collections::HashMap<String, reqwest::Client>>,
    resolver: Arc<Resolver>,
    settings: Arc<Settings>,
}

impl Downloader {
    /// A downloader whose connections resolve host names through `resolver`.
    pub fn new(settings: Arc<Settings>, resolver: Arc<Resolver>) -> Result<Self, reqwest::Error> {
        let client = client_builder(&settings, &resolver).build()?;
        Ok(Downloader {
            client,
            proxied: Default::default(),
            resolver,
            settings,
        })
    }

    fn client_for(&self, request: &Request) -> Result<reqwest::Client, DownloadError> {
        let Some(proxy) = &request.proxy else {
            return Ok(self.client.clone());
        };
        let mut clients = self.proxied.lock().expect("proxy clients");
        if let Some(client) = clients.get(proxy.as_str()) {
            return Ok(client.clone());
        }
        let client = reqwest::Proxy::all(proxy.as_str())
            .and_then(|p| {
                client_builder(&self.settings, &self.resolver)
                    .proxy(p)
                    .build()
            })
            .map_err(|e| DownloadError::Other(format!("proxy {proxy}: {}", error_chain(&e))))?;
        clients.insert(proxy.to_string(), client.clone());
        Ok(client)
    }

    /// Sends the request (method, headers, body) and reads the whole body.
    pub async fn fetch(&self, request: Request) -> Result<Response, (Request, DownloadError)> {
        let started = Instant::now();
        let settings = &self.settings;
        let timeout = request.timeout.unwrap_or(settings.download_timeout);
        let client = match self.client_for(&request) {
            Ok(c) => c,
            Err(e) => return Err((request, e)),
        };
        let result = async {
            let mut builder = client
                .request(request.method.clone(), request.url.clone())
                .headers(request.headers.clone())
                .timeout(timeout);
            if !request.body.is_empty() {
                builder = builder.body(request.body.clone());
            }
            let response = builder
                .send()
                .await
                .map_err(|e| DownloadError::from_reqwest(e, timeout))?;
            // AutoThrottle's latency, as Scrapy's: until the headers arrived.
            let headers_latency = started.elapsed();
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            let body = read_body(response, settings, timeout).await?;
            Ok((status, headers, body, headers_latency))
        }
        .await;
        match result {
            Ok((status, headers, body, headers_latency)) => Ok(Response {
                url: request.url.clone(),
                status,
                headers,
                body,
                request,
                latency: started.elapsed(),
                headers_latency,
            }),
            Err(e) => Err((request, e)),
        }
    }
}

/// How long an idle connection is kept for reuse (hyper's default is 90 s).
pub const POOL_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

fn client_builder(settings: &Settings, resolver: &Arc<Resolver>) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .user_agent(settings.user_agent.clone())
        // Redirects go back through the scheduler, so they obey slots and dedup.
        .redirect(reqwest::redirect::Policy::none())
        .timeout(settings.download_timeout)
        .connect_timeout(settings.download_timeout)
        // Keep as many idle connections per host as the slot may use at once,
        // and no longer than POOL_IDLE_TIMEOUT: idle sockets are descriptors.
        // (A slot's last queued request asks the server to close instead.)
        .pool_max_idle_per_host(settings.default_slot_concurrency().max(1))
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .tcp_nodelay(true)
        .dns_resolver(Arc::new(SharedResolver(resolver.clone())))
}

async fn read_body(
    response: reqwest::Response,
    settings: &Settings,
    timeout: std::time::Duration,
) -> Result<Bytes, DownloadError> {
    let max = settings.download_maxsize;
    if max > 0 && response.content_length().is_some_and(|n| n > max) {
        return Err(DownloadError::TooLarge(max));
    }
    let mut body =
        BytesMut::with_capacity(response.content_length().unwrap_or(0).min(1 << 20) as usize);
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| DownloadError::from_reqwest(e, timeout))?;
        if max > 0 && (body.len() + chunk.len()) as u64 > max {
            return Err(DownloadError::TooLarge(max));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}
