//! Name resolution shared by the scheduler (for per-IP slot keys) and the
//! HTTP client (for connecting), so both agree on the address a host uses.
//!
//! Fixed mappings (`--resolve`) come first, then an async resolver
//! (hickory) that reads `/etc/resolv.conf` and `/etc/hosts`, or the name
//! servers `DNS_NAMESERVERS` names. Its cache keeps positive and negative
//! answers for their records' TTL (`DNSCACHE_ENABLED`, `DNSCACHE_SIZE`); at
//! most [`MAX_LOOKUPS_IN_FLIGHT`] lookups run at once, each bounded by
//! `DNS_TIMEOUT`. No blocking thread is used per lookup.
//!
//! A lookup that fails because this process is out of file descriptors is
//! a [`DnsError::Resources`], not a fact about the host: the engine waits and
//! tries again instead of counting it against the site.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::config::{NameServerConfigGroup, ResolverConfig, ResolverOpts};
use hickory_resolver::error::{ResolveError, ResolveErrorKind};
use hickory_resolver::TokioAsyncResolver;
use tokio::sync::Semaphore;

use crate::settings::Settings;

/// The most DNS lookups this process has in flight at once.
pub const MAX_LOOKUPS_IN_FLIGHT: usize = 64;

/// Why a host name has no address.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum DnsError {
    /// The name does not resolve, or its servers did not answer
    /// (`DNSLookupError` in the stats).
    #[error("cannot resolve `{host}`: {reason}")]
    Lookup {
        /// The host name.
        host: String,
        /// The resolver's reason.
        reason: String,
    },
    /// This process ran out of file descriptors (EMFILE/ENFILE) while
    /// looking the name up, or could reach no name server at all: the
    /// crawler's trouble, not the host's.
    #[error("cannot resolve `{host}`: out of file descriptors: {reason}")]
    Resources {
        /// The host name.
        host: String,
        /// The system's reason.
        reason: String,
    },
}

impl DnsError {
    /// Whether the lookup failed for lack of this process's own resources.
    pub fn is_resources(&self) -> bool {
        matches!(self, DnsError::Resources { .. })
    }
}

/// Whether an error chain says this process is out of file descriptors.
pub fn is_fd_exhaustion(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if matches!(io.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE)) {
                return true;
            }
        }
        if let Some(dns) = err.downcast_ref::<DnsError>() {
            return dns.is_resources();
        }
        let text = err.to_string();
        if text.contains("Too many open files") {
            return true;
        }
        source = err.source();
    }
    false
}

/// Host names to addresses: fixed mappings first, then the async resolver.
pub struct Resolver {
    fixed: HashMap<String, IpAddr>,
    inner: Option<TokioAsyncResolver>,
    /// Why there is no resolver (no name servers could be read).
    unavailable: String,
    in_flight: Semaphore,
    timeout: Duration,
}

impl Resolver {
    /// A resolver with fixed host → address mappings (like curl's
    /// `--resolve`), the rest resolved as the `DNS*` settings say.
    pub fn new(fixed: HashMap<String, IpAddr>, settings: &Settings) -> Self {
        let fixed = fixed
            .into_iter()
            .map(|(h, ip)| (h.to_ascii_lowercase(), ip))
            .collect();
        let config = if settings.dns_nameservers.is_empty() {
            hickory_resolver::system_conf::read_system_conf().map_err(|e| e.to_string())
        } else {
            let mut group = NameServerConfigGroup::new();
            for addr in &settings.dns_nameservers {
                group.merge(NameServerConfigGroup::from_ips_clear(
                    &[addr.ip()],
                    addr.port(),
                    true,
                ));
            }
            Ok((
                ResolverConfig::from_parts(None, vec![], group),
                ResolverOpts::default(),
            ))
        };
        let (inner, unavailable) = match config {
            Ok((config, mut opts)) => {
                opts.cache_size = if settings.dnscache_enabled {
                    settings.dnscache_size
                } else {
                    0
                };
                opts.timeout = opts.timeout.min(settings.dns_timeout);
                opts.use_hosts_file = true;
                (Some(TokioAsyncResolver::tokio(config, opts)), String::new())
            }
            Err(e) => (None, format!("no DNS configuration: {e}")),
        };
        Resolver {
            fixed,
            inner,
            unavailable,
            in_flight: Semaphore::new(MAX_LOOKUPS_IN_FLIGHT),
            timeout: settings.dns_timeout,
        }
    }

    /// A resolver with fixed mappings and default settings.
    #[cfg(test)]
    pub fn with_fixed(fixed: HashMap<String, IpAddr>) -> Self {
        Resolver::new(fixed, &Settings::default())
    }

    /// The host's addresses, the first being the one connections try first.
    pub async fn lookup(&self, host: &str) -> Result<Arc<[IpAddr]>, DnsError> {
        if let Some(ip) = self.fixed.get(host) {
            return Ok(Arc::from([*ip]));
        }
        if let Ok(ip) = host.trim_matches(['[', ']']).parse::<IpAddr>() {
            return Ok(Arc::from([ip]));
        }
        let lookup_err = |reason: String| DnsError::Lookup {
            host: host.to_string(),
            reason,
        };
        let Some(inner) = &self.inner else {
            return Err(lookup_err(self.unavailable.clone()));
        };
        let _permit = self.in_flight.acquire().await.expect("never closed");
        let answer = tokio::time::timeout(self.timeout, inner.lookup_ip(host))
            .await
            .map_err(|_| lookup_err(format!("no answer in {:?} (DNS_TIMEOUT)", self.timeout)))?;
        let classify = |e: ResolveError| {
            // No name server could be reached at all: our side, as running out of descriptors is.
            let no_connections = matches!(e.kind(), ResolveErrorKind::NoConnections);
            if no_connections || is_fd_exhaustion(&e) {
                DnsError::Resources {
                    host: host.to_string(),
                    reason: e.to_string(),
                }
            } else {
                lookup_err(e.to_string())
            }
        };
        let addrs: Vec<IpAddr> = match answer {
            Ok(lookup) => lookup.iter().collect(),
            // A then AAAA: an A query that failed for lack of descriptors is
            // hidden behind an AAAA that found nothing. Ask for A alone again
            // (cached if the name really has none) to learn which it was.
            Err(e) if matches!(e.kind(), ResolveErrorKind::NoRecordsFound { .. }) => {
                match inner.ipv4_lookup(host).await {
                    Ok(v4) => v4.iter().map(|a| IpAddr::V4(a.0)).collect(),
                    Err(e4) if matches!(e4.kind(), ResolveErrorKind::NoRecordsFound { .. }) => {
                        return Err(classify(e))
                    }
                    Err(e4) => return Err(classify(e4)),
                }
            }
            Err(e) => return Err(classify(e)),
        };
        if addrs.is_empty() {
            return Err(lookup_err("no addresses".to_string()));
        }
        Ok(addrs.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn fixed_then_literal_then_hosts_file() {
        let r = Resolver::with_fixed(HashMap::from([(
            "A.test".to_string(),
            "127.0.0.2".parse().unwrap(),
        )]));
        assert_eq!(
            &*r.lookup("a.test").await.unwrap(),
            &["127.0.0.2".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(
            &*r.lookup("127.0.0.9").await.unwrap(),
            &["127.0.0.9".parse::<IpAddr>().unwrap()]
        );
        let local = r.lookup("localhost").await.unwrap();
        assert!(local.iter().all(|ip| ip.is_loopback()));
    }

    #[test]
    fn out_of_descriptors_is_told_apart() {
        let e = std::io::Error::from_raw_os_error(libc::EMFILE);
        assert!(is_fd_exhaustion(&e));
        let e = std::io::Error::from_raw_os_error(libc::ECONNREFUSED);
        assert!(!is_fd_exhaustion(&e));
    }
}
