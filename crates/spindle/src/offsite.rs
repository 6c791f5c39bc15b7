//! The offsite filter: requests may only go to the spider's allowed domains
//! and their subdomains (Scrapy's OffsiteMiddleware).

use url::Url;

#[derive(Debug, Clone, Default)]
pub struct OffsiteFilter {
    /// Lower-case domains; empty allows everything.
    domains: Vec<String>,
}

impl OffsiteFilter {
    pub fn new(domains: impl IntoIterator<Item = String>) -> Self {
        OffsiteFilter {
            domains: domains
                .into_iter()
                .map(|d| d.trim().trim_end_matches('.').to_ascii_lowercase())
                .filter(|d| !d.is_empty())
                .collect(),
        }
    }

    pub fn allows(&self, url: &Url) -> bool {
        if self.domains.is_empty() {
            return true;
        }
        let Some(host) = url.host_str() else {
            return false;
        };
        self.domains.iter().any(|d| {
            host == d
                || (host.len() > d.len()
                    && host.ends_with(d.as_str())
                    && host.as_bytes()[host.len() - d.len() - 1] == b'.')
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domain_and_subdomains_only() {
        let f = OffsiteFilter::new(["Example.com".to_string()]);
        let ok = |u: &str| f.allows(&Url::parse(u).unwrap());
        assert!(ok("http://example.com/a"));
        assert!(ok("https://www.example.com:8080/"));
        assert!(!ok("http://badexample.com/"));
        assert!(!ok("http://example.com.evil.test/"));
        assert!(OffsiteFilter::default().allows(&Url::parse("http://any.test/").unwrap()));
    }
}
