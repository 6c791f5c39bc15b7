//! URL canonicalization: never panics, is idempotent, and agrees with the fingerprint.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spindle::{canonicalize_url, fingerprint};
use url::Url;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(url) = Url::parse(text) else { return };
    // The crawler canonicalizes only what it can fetch.
    if spindle::check_crawlable(&url).is_err() {
        return;
    }
    let canonical = canonicalize_url(&url);
    let again = Url::parse(&canonical).expect("a canonical URL parses");
    assert_eq!(canonicalize_url(&again), canonical, "canonicalization is idempotent");
    assert_eq!(fingerprint(&again), fingerprint(&url));
});
