//! Micro-benchmarks for the per-page hot path: link extraction and URL canonicalization.
//!
//! ```sh
//! cargo bench -p spindle --bench extract
//! ```
//!
//! The page is the Python docs' `library/functions.html` when Debian's `python3-doc` is
//! installed (as `bench/python-docs.sh` installs it), else a generated page of about the
//! same size and link count.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use spindle::LinkExtractor;
use spindle::{canonicalize_url, fingerprint};
use url::Url;

const DOCS_PAGE: &str = "/usr/share/doc/python3/html/library/functions.html";

fn page() -> (Url, Vec<u8>) {
    let url = Url::parse("http://docs.test:8080/library/functions.html").unwrap();
    if let Ok(body) = std::fs::read(DOCS_PAGE) {
        return (url, body);
    }
    let mut html =
        String::from("<!DOCTYPE html><html><head><title>Built-in Functions</title></head><body>");
    for i in 0..400 {
        html.push_str(&format!(
            "<p>Some text about item {i}, <code>code</code> and <em>more</em>.</p>\
             <a class=\"reference internal\" href=\"../reference/page{}.html#section-{i}\">link {i}</a>\n",
            i % 50
        ));
    }
    html.push_str("</body></html>");
    (url, html.into_bytes())
}

fn extraction(c: &mut Criterion) {
    let (url, body) = page();
    let extractor = LinkExtractor::new().with_field("title", "title").unwrap();
    let links = extractor.extract(&body, &url, None).links;
    let mut g = c.benchmark_group("extract");
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function("links+title", |b| {
        b.iter(|| extractor.extract(black_box(&body), &url, None))
    });
    g.bench_function("links", |b| {
        let plain = LinkExtractor::new();
        b.iter(|| plain.extract(black_box(&body), &url, None))
    });
    g.finish();

    let mut g = c.benchmark_group("canonicalize");
    g.throughput(Throughput::Elements(links.len() as u64));
    g.bench_function("canonicalize_url", |b| {
        b.iter(|| {
            for l in &links {
                black_box(canonicalize_url(black_box(l)));
            }
        })
    });
    g.bench_function("fingerprint", |b| {
        b.iter(|| {
            for l in &links {
                black_box(fingerprint(black_box(l)));
            }
        })
    });
    let query = Url::parse("http://e.test/search?q=rust&page=2&sort=new&a=1#top").unwrap();
    g.throughput(Throughput::Elements(1));
    g.bench_function("canonicalize_url/query", |b| {
        b.iter(|| canonicalize_url(black_box(&query)))
    });
    g.finish();
}

criterion_group!(benches, extraction);
criterion_main!(benches);
