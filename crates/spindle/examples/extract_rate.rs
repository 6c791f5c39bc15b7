//! The raw link-extraction rate of spindle's parser on a folder of HTML files: the
//! ceiling on how fast a crawl of those pages can go, with no network at all.
//!
//! ```sh
//! cargo run --release -p spindle --example extract_rate -- /usr/share/doc/python3/html [SECONDS]
//! ```
//!
//! Each file is parsed as `spindle crawl --field title=title` parses a page: one pass
//! that resolves every `<a href>` against the page URL and takes the `<title>` text.
//! It reports pages/s and MB/s on one thread and on a pool of one thread per core.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rayon::prelude::*;
use spindle::LinkExtractor;
use url::Url;

fn html_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            html_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "html") {
            out.push(path);
        }
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().expect("usage: extract_rate DIR [SECONDS]"));
    let seconds: f64 = args.next().map_or(3.0, |s| s.parse().expect("seconds"));
    let dir = dir.canonicalize().expect("DIR exists");
    let mut files = Vec::new();
    html_files(&dir, &mut files);
    files.sort();
    let base = Url::parse("http://docs.test:8080/").unwrap();
    let pages: Vec<(Url, Vec<u8>)> = files
        .iter()
        .map(|p| {
            let rel = p.strip_prefix(&dir).unwrap().to_string_lossy().into_owned();
            (base.join(&rel).unwrap(), std::fs::read(p).unwrap())
        })
        .collect();
    let bytes: usize = pages.iter().map(|(_, b)| b.len()).sum();
    let extractor = LinkExtractor::new().with_field("title", "title").unwrap();
    let links: usize = pages
        .iter()
        .map(|(u, b)| extractor.extract(b, u, None).links.len())
        .sum();
    println!(
        "{} HTML files, {:.1} MB, {} links ({:.0} per page)",
        pages.len(),
        bytes as f64 / 1e6,
        links,
        links as f64 / pages.len() as f64
    );

    let threads = rayon::current_num_threads();
    for (label, parallel) in [("1 thread", false), ("all cores", true)] {
        let budget = Duration::from_secs_f64(seconds);
        let started = Instant::now();
        let mut rounds = 0usize;
        while rounds == 0 || started.elapsed() < budget {
            let found: usize = if parallel {
                pages
                    .par_iter()
                    .map(|(u, b)| extractor.extract(b, u, None).links.len())
                    .sum()
            } else {
                pages
                    .iter()
                    .map(|(u, b)| extractor.extract(b, u, None).links.len())
                    .sum()
            };
            assert_eq!(found, links);
            rounds += 1;
        }
        let secs = started.elapsed().as_secs_f64();
        let label = if parallel {
            format!("{label} ({threads})")
        } else {
            label.to_string()
        };
        println!(
            "extract {label}: {:.0} pages/s, {:.0} MB/s, {:.2} ms/page",
            (rounds * pages.len()) as f64 / secs,
            (rounds * bytes) as f64 / secs / 1e6,
            secs * 1e3 / (rounds * pages.len()) as f64
                * if parallel { threads as f64 } else { 1.0 },
        );
    }
}
