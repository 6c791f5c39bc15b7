//! Name resolution shared by the scheduler (for per-IP slot keys) and the
//! HTTP client (for connecting), so both agree on the address a host uses.
//!
//! Fixed mappings (`--resolve`) come first, then a cache filled by the
//! system resolver. The cache is consulted once per new connection and once
//! per host for slot keys, never per request on an open connection.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

#[derive(Debug, Clone, thiserror::Error)]
#[error("cannot resolve `{host}`: {reason}")]
pub struct DnsError {
    pub host: String,
    pub reason: String,
}

#[derive(Default)]
pub struct Resolver {
    fixed: HashMap<String, IpAddr>,
    cache: Mutex<HashMap<String, Arc<[IpAddr]>>>,
}

impl Resolver {
    /// A resolver with fixed host → address mappings, like curl's `--resolve`.
    pub fn with_fixed(fixed: HashMap<String, IpAddr>) -> Self {
        Resolver {
            fixed: fixed
                .into_iter()
                .map(|(h, ip)| (h.to_ascii_lowercase(), ip))
                .collect(),
            cache: Mutex::default(),
        }
    }

    /// The host's addresses, the first being the one connections try first.
    pub async fn lookup(&self, host: &str) -> Result<Arc<[IpAddr]>, DnsError> {
        if let Some(ip) = self.fixed.get(host) {
            return Ok(Arc::from([*ip]));
        }
        if let Ok(ip) = host.trim_matches(['[', ']']).parse::<IpAddr>() {
            return Ok(Arc::from([ip]));
        }
        if let Some(hit) = self.cache.lock().expect("dns cache").get(host) {
            return Ok(hit.clone());
        }
        let addrs: Vec<IpAddr> = tokio::net::lookup_host((host, 0))
            .await
            .map_err(|e| DnsError {
                host: host.to_string(),
                reason: e.to_string(),
            })?
            .map(|sa| sa.ip())
            .collect();
        if addrs.is_empty() {
            return Err(DnsError {
                host: host.to_string(),
                reason: "no addresses".to_string(),
            });
        }
        let mut cache = self.cache.lock().expect("dns cache");
        // Keep the first answer: a host's slot key must not change mid-crawl.
        Ok(cache
            .entry(host.to_string())
            .or_insert(addrs.into())
            .clone())
    }
}

/// Lets the HTTP client connect through the same table.
pub struct SharedResolver(pub Arc<Resolver>);

impl Resolve for SharedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let resolver = self.0.clone();
        Box::pin(async move {
            let ips = resolver.lookup(name.as_str()).await?;
            let addrs: Addrs = Box::new(
                ips.iter()
                    .map(|ip| SocketAddr::new(*ip, 0))
                    .collect::<Vec<_>>()
                    .into_iter(),
            );
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn fixed_then_literal_then_system() {
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
}
