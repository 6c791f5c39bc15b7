//! Link extraction on arbitrary bytes: never panics, and every link it returns is crawlable.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spindle::linkextractor::MAX_URL_LEN;
use spindle::LinkExtractor;
use url::Url;

fuzz_target!(|data: &[u8]| {
    let page = Url::parse("http://fuzz.test/dir/page.html").unwrap();
    let extractor = LinkExtractor::new().with_field("title", "title").unwrap();
    for charset in [None, Some("windows-1252"), Some("shift_jis")] {
        let out = extractor.extract(data, &page, charset);
        for link in &out.links {
            assert!(matches!(link.scheme(), "http" | "https"), "{link}");
            assert!(link.host_str().is_some_and(|h| !h.is_empty()), "{link}");
            assert!(link.as_str().len() <= MAX_URL_LEN);
        }
    }
});
