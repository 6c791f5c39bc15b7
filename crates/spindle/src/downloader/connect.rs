//! Opening a connection: the resolver's addresses in order, TCP with
//! `TCP_NODELAY`, a `CONNECT` tunnel when an `https` URL goes through a
//! proxy, then TLS (rustls, HTTP/1.1 by ALPN). The send gate's stream sits
//! right on the TCP socket, under TLS.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use url::Url;

use super::dns::{DnsError, Resolver};
use super::wire::{Arming, GatedStream};
use super::DownloadError;

/// A connection's byte stream, plain or TLS.
pub trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

/// Where a connection goes: the pool keeps idle connections per origin.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Origin {
    /// `http` or `https`.
    pub https: bool,
    /// The host name or address literal.
    pub host: String,
    /// The port.
    pub port: u16,
    /// The proxy's URL, when the request names one.
    pub proxy: Option<Url>,
}

impl Origin {
    /// The origin of `url`, reached through `proxy` if any.
    pub fn of(url: &Url, proxy: Option<&Url>) -> Result<Self, DownloadError> {
        let https = match url.scheme() {
            "http" => false,
            "https" => true,
            other => {
                return Err(DownloadError::Other(format!(
                    "unsupported scheme `{other}`"
                )))
            }
        };
        let host = url
            .host_str()
            .ok_or_else(|| DownloadError::Other(format!("no host in {url}")))?;
        Ok(Origin {
            https,
            host: host.to_string(),
            port: url.port_or_known_default().unwrap_or(80),
            proxy: proxy.cloned(),
        })
    }

    /// Whether requests go to a plain-HTTP proxy in absolute form.
    pub fn via_http_proxy(&self) -> bool {
        self.proxy.is_some() && !self.https
    }
}

/// Opens connections.
pub struct Connector {
    resolver: Arc<Resolver>,
    tls: tokio_rustls::TlsConnector,
}

impl Connector {
    /// A connector resolving through `resolver`, verifying certificates
    /// against the Mozilla roots (webpki-roots) as browsers' stores do.
    pub fn new(resolver: Arc<Resolver>) -> Self {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("ring supports TLS 1.2 and 1.3")
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Connector {
            resolver,
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
        }
    }

    /// A connection to `origin`, whose request writes pass the gate `arming` names.
    pub async fn connect(
        &self,
        origin: &Origin,
        arming: Arc<Arming>,
    ) -> Result<Box<dyn Stream>, DownloadError> {
        let (host, port) = match &origin.proxy {
            Some(proxy) => (
                proxy.host_str().unwrap_or_default().to_string(),
                proxy.port_or_known_default().unwrap_or(8080),
            ),
            None => (origin.host.clone(), origin.port),
        };
        let tcp = self.tcp(&host, port).await?;
        let mut stream = GatedStream::new(tcp, arming);
        if let (Some(proxy), true) = (&origin.proxy, origin.https) {
            tunnel(&mut stream, origin, proxy).await?;
        }
        if !origin.https {
            return Ok(Box::new(stream));
        }
        let name = rustls::pki_types::ServerName::try_from(origin.host.trim_matches(['[', ']']))
            .map_err(|e| DownloadError::Connect(format!("TLS name {}: {e}", origin.host)))?
            .to_owned();
        let tls = self
            .tls
            .connect(name, stream)
            .await
            .map_err(|e| connect_error(&e, &origin.host))?;
        Ok(Box::new(tls))
    }

    async fn tcp(&self, host: &str, port: u16) -> Result<TcpStream, DownloadError> {
        let ips = self.resolver.lookup(host).await.map_err(|e| match e {
            DnsError::Resources { .. } => DownloadError::LocalResources(e.to_string()),
            DnsError::Lookup { .. } => DownloadError::DnsLookup(e.to_string()),
        })?;
        let mut last = None;
        for ip in ips.iter() {
            match TcpStream::connect(SocketAddr::new(*ip, port)).await {
                Ok(tcp) => {
                    // Requests are written whole; waiting to coalesce only adds latency.
                    let _ = tcp.set_nodelay(true);
                    return Ok(tcp);
                }
                Err(e) => last = Some(e),
            }
        }
        let e = last.expect("a lookup returns at least one address");
        Err(connect_error(&e, &format!("{host}:{port}")))
    }
}

fn connect_error(e: &std::io::Error, target: &str) -> DownloadError {
    if super::dns::is_fd_exhaustion(e) {
        DownloadError::LocalResources(format!("{target}: {e}"))
    } else {
        DownloadError::Connect(format!("{target}: {e}"))
    }
}

/// Asks an HTTP proxy for a tunnel to `origin` (RFC 9110 `CONNECT`).
async fn tunnel<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    origin: &Origin,
    proxy: &Url,
) -> Result<(), DownloadError> {
    let target = format!("{}:{}", origin.host, origin.port);
    let mut head = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
    if let Some(auth) = proxy_authorization(proxy) {
        head.push_str(&format!("Proxy-Authorization: {auth}\r\n"));
    }
    head.push_str("\r\n");
    let fail =
        |why: String| DownloadError::Connect(format!("proxy {proxy} CONNECT {target}: {why}"));
    stream
        .write_all(head.as_bytes())
        .await
        .map_err(|e| fail(e.to_string()))?;
    // Read the reply byte by byte: nothing past its blank line belongs to it.
    let mut reply = Vec::new();
    while !reply.ends_with(b"\r\n\r\n") {
        if reply.len() > 8192 {
            return Err(fail("reply head too long".into()));
        }
        let byte = stream.read_u8().await.map_err(|e| fail(e.to_string()))?;
        reply.push(byte);
    }
    let status_line = String::from_utf8_lossy(&reply);
    let status_line = status_line.lines().next().unwrap_or_default();
    match status_line.split_whitespace().nth(1) {
        Some(code) if code.starts_with('2') => Ok(()),
        _ => Err(fail(status_line.to_string())),
    }
}

/// `Basic` credentials from a proxy URL's user and password, if it has them.
pub fn proxy_authorization(proxy: &Url) -> Option<String> {
    use base64::Engine;
    if proxy.username().is_empty() {
        return None;
    }
    let user = percent_decode(proxy.username());
    let pass = percent_decode(proxy.password().unwrap_or_default());
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
    Some(format!("Basic {token}"))
}

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}
