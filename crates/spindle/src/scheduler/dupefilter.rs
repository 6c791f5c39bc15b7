//! The duplicate filter: one fetch per canonical URL.
//!
//! URLs are canonicalized as Scrapy's `canonicalize_url` does for the parts
//! that matter to a crawl (fragment dropped, query arguments sorted, default
//! port dropped — the last by the `url` crate's parser, which also lower-cases
//! the scheme and host and normalizes percent-encoding), then reduced to a
//! 64-bit XXH3 fingerprint. Storing 8-byte fingerprints instead of URL strings
//! keeps the seen-set small: 7–9 bytes per URL in a compact table
//! (`fpset`; Scrapy keeps ~1 KB per URL, #5307); the chance of
//! any collision among 10 million URLs is about 3 in a million.

use url::Url;

use super::fpset::FingerprintSet;

/// The URL in canonical form, as text.
pub fn canonicalize_url(url: &Url) -> String {
    let mut canonical = url.clone();
    canonical.set_fragment(None);
    if let Some(query) = url.query() {
        if query.is_empty() {
            canonical.set_query(None);
        } else {
            let mut args: Vec<&str> = query.split('&').filter(|a| !a.is_empty()).collect();
            // Sort by the whole `key=value` text: keys first, then values, the
            // order Scrapy's canonicalize_url gives, and stable for repeated keys.
            args.sort_by(|a, b| split_arg(a).cmp(&split_arg(b)));
            let sorted = args.join("&");
            canonical.set_query(if sorted.is_empty() {
                None
            } else {
                Some(&sorted)
            });
        }
    }
    canonical.into()
}

fn split_arg(arg: &str) -> (&str, &str) {
    arg.split_once('=').unwrap_or((arg, ""))
}

/// The 64-bit fingerprint of a URL's canonical form.
pub fn fingerprint(url: &Url) -> u64 {
    // Fast path, no copy: when the query has at most one argument, the canonical
    // form is the serialization up to the fragment (the `url` crate has already
    // normalized the rest). `#` cannot occur unescaped before the fragment.
    let text = url.as_str();
    let before_fragment = text.split_once('#').map_or(text, |(head, _)| head);
    match url.query() {
        None => return xxhash_rust::xxh3::xxh3_64(before_fragment.as_bytes()),
        Some(q) if !q.is_empty() && !q.contains('&') => {
            return xxhash_rust::xxh3::xxh3_64(before_fragment.as_bytes())
        }
        Some(_) => {}
    }
    xxhash_rust::xxh3::xxh3_64(canonicalize_url(url).as_bytes())
}

/// The set of fingerprints already scheduled.
#[derive(Default)]
pub struct DupeFilter {
    seen: FingerprintSet,
}

impl DupeFilter {
    /// Records the URL; true when it had not been seen before.
    pub fn insert(&mut self, url: &Url) -> bool {
        self.seen.insert(fingerprint(url))
    }

    /// Records a fingerprint (see [`fingerprint`]); true when it had not been seen before.
    pub fn insert_fingerprint(&mut self, fp: u64) -> bool {
        self.seen.insert(fp)
    }

    /// Whether a fingerprint has been recorded, without recording it.
    pub fn contains_fingerprint(&self, fp: u64) -> bool {
        self.seen.contains(fp)
    }

    /// Heap bytes of the seen-set: about 7–9 per URL (see `fpset`).
    pub fn heap_bytes(&self) -> usize {
        self.seen.heap_bytes()
    }

    /// Fingerprints recorded.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether nothing was recorded yet.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(s: &str) -> String {
        canonicalize_url(&Url::parse(s).unwrap())
    }

    #[test]
    fn canonical_forms() {
        assert_eq!(
            canon("http://Example.COM:80/a#frag"),
            "http://example.com/a"
        );
        assert_eq!(canon("https://example.com:443/"), "https://example.com/");
        assert_eq!(
            canon("http://example.com:8080/"),
            "http://example.com:8080/"
        );
        assert_eq!(
            canon("http://e.com/p?b=2&a=1&a=0"),
            "http://e.com/p?a=0&a=1&b=2"
        );
        assert_eq!(canon("http://e.com/p?"), "http://e.com/p");
        assert_eq!(canon("http://e.com/p?c&&a=1"), "http://e.com/p?a=1&c");
        assert_eq!(canon("http://e.com"), "http://e.com/");
    }

    #[test]
    fn fingerprint_is_the_hash_of_the_canonical_form() {
        for u in [
            "http://Example.COM:80/a#frag",
            "http://e.com/p?b=2&a=1&a=0#x",
            "http://e.com/p?",
            "http://e.com/p?#",
            "http://e.com/p?c&&a=1",
            "http://e.com/p?a=1#f#g",
            "http://e.com/p?&",
            "http://e.com/p?only",
            "http://e.com/%23/x?q=%23#y",
            "http://e.com",
        ] {
            let url = Url::parse(u).unwrap();
            assert_eq!(
                fingerprint(&url),
                xxhash_rust::xxh3::xxh3_64(canonicalize_url(&url).as_bytes()),
                "{u}"
            );
        }
    }

    #[test]
    fn dedup_by_canonical_url() {
        let mut f = DupeFilter::default();
        assert!(f.insert(&Url::parse("http://e.com/p?a=1&b=2").unwrap()));
        assert!(!f.insert(&Url::parse("http://E.com:80/p?b=2&a=1#x").unwrap()));
        assert!(f.insert(&Url::parse("https://e.com/p?a=1&b=2").unwrap()));
        assert_eq!(f.len(), 2);
    }
}
