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
//! The answers are cached here ([`AnswerCache`]), not in hickory's cache,
//! which keeps about 800 bytes in several allocations per name: 10,000 of
//! them, replaced one by one through a broad crawl, ended up scattered over
//! the whole heap and kept some 100 MB of freed pages from going back to the
//! system. Here an answer is one fixed-size entry in one table. hickory keeps
//! a small cache of its own, so that asking for A after A-then-AAAA found
//! nothing costs no extra query.
//!
//! A lookup that fails because this process is out of file descriptors is
//! a [`DnsError::Resources`], not a fact about the host: the engine waits and
//! tries again instead of counting it against the site.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_resolver::config::{NameServerConfigGroup, ResolverConfig, ResolverOpts};
use hickory_resolver::error::{ResolveError, ResolveErrorKind};
use hickory_resolver::TokioAsyncResolver;
use tokio::sync::Semaphore;

use crate::settings::Settings;

/// The most DNS lookups this process has in flight at once.
pub const MAX_LOOKUPS_IN_FLIGHT: usize = 64;

/// hickory's own cache: only for the moments between its queries for one name.
const HICKORY_CACHE_SIZE: usize = 256;

/// At most this many addresses of a name are kept (connections try them in order).
const ADDRS_KEPT: usize = 4;

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
    answers: Option<Mutex<AnswerCache>>,
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
                    settings.dnscache_size.min(HICKORY_CACHE_SIZE)
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
            answers: (settings.dnscache_enabled && settings.dnscache_size > 0)
                .then(|| Mutex::new(AnswerCache::new(settings.dnscache_size))),
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
        if let Some(answer) = self.cached(host) {
            return answer;
        }
        let answer = self.ask(inner, host).await;
        if let Some(cache) = &self.answers {
            let valid_until = match &answer {
                Ok((_, until)) => Some(*until),
                Err((_, negative_until)) => *negative_until,
            };
            if let Some(until) = valid_until {
                let kept = answer
                    .as_ref()
                    .map(|(addrs, _)| Addrs::new(addrs))
                    .map_err(|(e, _)| e.clone());
                cache
                    .lock()
                    .expect("not poisoned")
                    .insert(host, kept, until);
            }
        }
        answer.map(|(addrs, _)| addrs).map_err(|(e, _)| e)
    }

    fn cached(&self, host: &str) -> Option<Result<Arc<[IpAddr]>, DnsError>> {
        let cache = self.answers.as_ref()?;
        let found = cache
            .lock()
            .expect("not poisoned")
            .get(host, Instant::now())?;
        Some(found.map(|addrs| addrs.to_arc()))
    }

    /// Asks the resolver; an answer comes with the time it is good until (an
    /// error with the time its absence is, if the servers said).
    async fn ask(
        &self,
        inner: &TokioAsyncResolver,
        host: &str,
    ) -> Result<(Arc<[IpAddr]>, Instant), (DnsError, Option<Instant>)> {
        let lookup_err = |reason: String| DnsError::Lookup {
            host: host.to_string(),
            reason,
        };
        let _permit = self.in_flight.acquire().await.expect("never closed");
        let answer = tokio::time::timeout(self.timeout, inner.lookup_ip(host))
            .await
            .map_err(|_| {
                let reason = format!("no answer in {:?} (DNS_TIMEOUT)", self.timeout);
                (lookup_err(reason), None)
            })?;
        let classify = |e: ResolveError| {
            // No name server could be reached at all: our side, as running out of descriptors is.
            let no_connections = matches!(e.kind(), ResolveErrorKind::NoConnections);
            if no_connections || is_fd_exhaustion(&e) {
                let host = host.to_string();
                (
                    DnsError::Resources {
                        host,
                        reason: e.to_string(),
                    },
                    None,
                )
            } else {
                // The servers said the name has no records: that holds for the SOA's TTL.
                let negative_until = match e.kind() {
                    ResolveErrorKind::NoRecordsFound {
                        negative_ttl: Some(ttl),
                        ..
                    } => Some(Instant::now() + Duration::from_secs(u64::from(*ttl))),
                    _ => None,
                };
                (lookup_err(e.to_string()), negative_until)
            }
        };
        let (addrs, valid_until): (Vec<IpAddr>, Instant) = match answer {
            Ok(lookup) => (lookup.iter().collect(), lookup.valid_until()),
            // A then AAAA: an A query that failed for lack of descriptors is
            // hidden behind an AAAA that found nothing. Ask for A alone again
            // (cached if the name really has none) to learn which it was.
            Err(e) if matches!(e.kind(), ResolveErrorKind::NoRecordsFound { .. }) => {
                match inner.ipv4_lookup(host).await {
                    Ok(v4) => (
                        v4.iter().map(|a| IpAddr::V4(a.0)).collect(),
                        v4.valid_until(),
                    ),
                    Err(e4) if matches!(e4.kind(), ResolveErrorKind::NoRecordsFound { .. }) => {
                        return Err(classify(e))
                    }
                    Err(e4) => return Err(classify(e4)),
                }
            }
            Err(e) => return Err(classify(e)),
        };
        if addrs.is_empty() {
            return Err((lookup_err("no addresses".to_string()), None));
        }
        Ok((addrs.into(), valid_until))
    }
}

/// Up to [`ADDRS_KEPT`] addresses, inline (no allocation of their own).
#[derive(Clone, Copy, Debug)]
struct Addrs {
    list: [IpAddr; ADDRS_KEPT],
    len: u8,
}

impl Addrs {
    fn new(addrs: &[IpAddr]) -> Self {
        let mut list = [IpAddr::V4(Ipv4Addr::UNSPECIFIED); ADDRS_KEPT];
        let len = addrs.len().min(ADDRS_KEPT);
        list[..len].copy_from_slice(&addrs[..len]);
        Addrs {
            list,
            len: len as u8,
        }
    }

    fn to_arc(self) -> Arc<[IpAddr]> {
        Arc::from(&self.list[..usize::from(self.len)])
    }
}

/// Answers by name, each until its TTL runs out, at most `DNSCACHE_SIZE`
/// names (the oldest answer goes first). Keyed by a 128-bit hash of the name.
struct AnswerCache {
    /// The answer, until when it holds, and its number in the order.
    answers: HashMap<u128, (Result<Addrs, DnsError>, Instant, u64)>,
    /// Names in the order their answers came, numbered, for the bound.
    order: VecDeque<(u128, u64)>,
    answered: u64,
    max: usize,
}

impl AnswerCache {
    fn new(max: usize) -> Self {
        AnswerCache {
            answers: HashMap::new(),
            order: VecDeque::new(),
            answered: 0,
            max,
        }
    }

    fn key(host: &str) -> u128 {
        xxhash_rust::xxh3::xxh3_128(host.as_bytes())
    }

    fn get(&mut self, host: &str, now: Instant) -> Option<Result<Addrs, DnsError>> {
        let key = AnswerCache::key(host);
        let (answer, until, _) = self.answers.get(&key)?;
        if *until <= now {
            self.answers.remove(&key);
            return None;
        }
        Some(answer.clone())
    }

    fn insert(&mut self, host: &str, answer: Result<Addrs, DnsError>, until: Instant) {
        let key = AnswerCache::key(host);
        self.answered += 1;
        self.answers.insert(key, (answer, until, self.answered));
        self.order.push_back((key, self.answered));
        while self.order.len() > self.max {
            let Some((old, number)) = self.order.pop_front() else {
                break;
            };
            // A name answered again since has a later place in the order: keep it.
            if matches!(self.answers.get(&old), Some((_, _, latest)) if *latest == number) {
                self.answers.remove(&old);
            }
        }
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
    fn answers_are_kept_until_their_ttl_and_the_oldest_go_past_the_bound() {
        let mut c = AnswerCache::new(2);
        let now = Instant::now();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let five: Vec<IpAddr> = (1..=5).map(|i| ip(&format!("127.0.0.{i}"))).collect();
        c.insert(
            "a.test",
            Ok(Addrs::new(&five)),
            now + Duration::from_secs(60),
        );
        let a = c.get("a.test", now).unwrap().unwrap().to_arc();
        assert_eq!(&*a, &five[..ADDRS_KEPT], "the first addresses, in order");
        assert!(
            c.get("a.test", now + Duration::from_secs(61)).is_none(),
            "expired"
        );
        assert!(c.get("a.test", now).is_none(), "and forgotten");
        let missing = DnsError::Lookup {
            host: "b.test".into(),
            reason: "no records".into(),
        };
        let far = now + Duration::from_secs(3600);
        c.insert("b.test", Err(missing.clone()), far);
        c.insert("c.test", Ok(Addrs::new(&[ip("127.0.0.3")])), far);
        c.insert("b.test", Err(missing.clone()), far);
        // Three answers for a bound of 2: the oldest is a's (gone) and b's first,
        // which a later answer for b replaced.
        c.insert("d.test", Ok(Addrs::new(&[ip("127.0.0.4")])), far);
        assert_eq!(c.get("b.test", now).unwrap().unwrap_err(), missing);
        assert!(c.get("c.test", now).is_none(), "c's answer was the oldest");
        assert!(c.get("d.test", now).is_some());
    }

    #[test]
    fn out_of_descriptors_is_told_apart() {
        let e = std::io::Error::from_raw_os_error(libc::EMFILE);
        assert!(is_fd_exhaustion(&e));
        let e = std::io::Error::from_raw_os_error(libc::ECONNREFUSED);
        assert!(!is_fd_exhaustion(&e));
    }
}
