//! Output semantics as in Scrapy (-o appends, -O overwrites), --stats paths
//! refused before anything is fetched, and a full disk (a file-size limit)
//! that stops the crawl with exit 1, whole records and the stats written.

mod common;

use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use spindle_testsite::{Site, TestServer};

const LIMIT: Duration = Duration::from_secs(60);

fn server(pages: usize) -> TestServer {
    TestServer::builder()
        .host(
            "a.test",
            Ipv4Addr::new(127, 0, 0, 2),
            Site::generated(pages).links_per_page(4),
        )
        .start()
        .unwrap()
}

/// Runs `spindle crawl a.test/ ARGS` in `dir`, robots.txt off, optionally
/// under a file-size limit in 512-byte blocks (`ulimit -f`); exit code and stderr.
fn crawl(
    server: &TestServer,
    dir: &std::path::Path,
    args: &[&str],
    fsize_blocks: Option<u32>,
) -> (i32, String) {
    let bin = env!("CARGO_BIN_EXE_spindle");
    let mut all: Vec<String> = vec!["crawl".into(), server.url("a.test", "/")];
    for r in server.resolve_args() {
        all.push("--resolve".into());
        all.push(r);
    }
    all.extend(["-s", "ROBOTSTXT_OBEY=false"].map(String::from));
    all.extend(args.iter().map(|s| s.to_string()));
    let mut cmd = match fsize_blocks {
        None => {
            let mut c = Command::new(bin);
            c.args(&all);
            c
        }
        Some(blocks) => {
            let mut c = Command::new("sh");
            c.arg("-c")
                .arg(format!("ulimit -f {blocks} && exec \"$0\" \"$@\""))
                .arg(bin)
                .args(&all);
            c
        }
    };
    let child = cmd
        .current_dir(dir)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    let out = child.wait_with_output().unwrap();
    assert!(started.elapsed() < LIMIT);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The records a file holds, checking it parses whole in its format.
fn records(path: &std::path::Path) -> usize {
    let text = std::fs::read_to_string(path).unwrap();
    match path.extension().unwrap().to_str().unwrap() {
        "jsonl" => text
            .lines()
            .filter(|l| {
                serde_json::from_str::<Value>(l).is_ok() || panic!("not a whole JSON line: {l}")
            })
            .count(),
        "json" => serde_json::from_str::<Value>(&text)
            .expect("one whole JSON array")
            .as_array()
            .unwrap()
            .len(),
        _ => {
            assert!(
                text.is_empty() || text.ends_with('\n'),
                "ends on a whole row"
            );
            let mut r = csv::Reader::from_reader(text.as_bytes());
            let width = r.headers().unwrap().len();
            r.records()
                .filter(|row| {
                    row.as_ref().expect("a whole row").len() == width || panic!("a short row")
                })
                .count()
        }
    }
}

#[test]
fn dash_o_appends_and_dash_capital_o_overwrites() {
    let server = server(30);
    let dir = tempfile::tempdir().unwrap();
    for name in ["items.jsonl", "items.json", "items.csv"] {
        assert_eq!(crawl(&server, dir.path(), &["-o", name], None).0, 0);
        assert_eq!(records(&dir.path().join(name)), 31);
        assert_eq!(crawl(&server, dir.path(), &["-o", name], None).0, 0);
        assert_eq!(records(&dir.path().join(name)), 62, "{name}: -o appends");
        assert_eq!(crawl(&server, dir.path(), &["-O", name], None).0, 0);
        assert_eq!(records(&dir.path().join(name)), 31, "{name}: -O overwrites");
    }
    let (code, stderr) = crawl(
        &server,
        dir.path(),
        &["-o", "a.jsonl", "-O", "b.jsonl"],
        None,
    );
    assert_eq!(code, 2, "{stderr}");
}

#[test]
fn stats_paths_that_would_fail_are_refused_before_any_fetch() {
    let server = server(10);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("items.jsonl"), "{\"kept\": true}\n").unwrap();
    let (code, stderr) = crawl(
        &server,
        dir.path(),
        &["-o", "items.jsonl", "--stats", "./items.jsonl"],
        None,
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("--stats") && stderr.contains("items"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("items.jsonl")).unwrap(),
        "{\"kept\": true}\n"
    );
    let (code, stderr) = crawl(
        &server,
        dir.path(),
        &["-o", "x.jsonl", "--stats", "no/such/dir/stats.json"],
        None,
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("no/such/dir/stats.json"), "{stderr}");
    assert!(server.records().is_empty(), "nothing fetched");
}

#[test]
fn a_full_disk_stops_the_crawl_on_a_whole_record_with_stats() {
    // 24 blocks of 512 bytes: room for about a hundred items of 600 pages.
    let server = server(600);
    for name in ["items.jsonl", "items.json", "items.csv"] {
        let dir = tempfile::tempdir().unwrap();
        let (code, stderr) = crawl(
            &server,
            dir.path(),
            &["-o", name, "--stats", "stats.json"],
            Some(24),
        );
        assert_eq!(code, 1, "{name}: {stderr}");
        assert!(stderr.contains("writing items failed"), "{name}: {stderr}");
        assert!(
            stderr.contains("finish_reason"),
            "{name}: the stats are printed: {stderr}"
        );
        let n = records(&dir.path().join(name));
        assert!(n > 0 && n < 601, "{name}: {n} records");
        let stats: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join("stats.json")).unwrap())
                .unwrap();
        assert_eq!(stats["finish_reason"], "export_error", "{name}");
    }
}

#[test]
fn a_job_store_that_cannot_be_written_stops_before_any_fetch() {
    // fjall preallocates its journal (32 MiB), far over a 100 KiB limit.
    let server = server(10);
    let dir = tempfile::tempdir().unwrap();
    let (code, stderr) = crawl(
        &server,
        dir.path(),
        &["--job", "job", "-o", "items.jsonl"],
        Some(200),
    );
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("job store job"), "{stderr}");
    assert!(server.records().is_empty(), "nothing fetched");
}

#[test]
fn past_memusage_limit_the_crawl_closes_with_stats_and_fails() {
    // Slow enough pages that the crawl is still running at the first check.
    let site = Site::generated(300)
        .links_per_page(4)
        .latency(Duration::from_millis(50));
    let server = TestServer::builder()
        .host("a.test", Ipv4Addr::new(127, 0, 0, 2), site)
        .start()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (code, stderr) = crawl(
        &server,
        dir.path(),
        &[
            "-o",
            "items.jsonl",
            "--stats",
            "stats.json",
            "-s",
            "MEMUSAGE_LIMIT_MB=1",
            "-s",
            "MEMUSAGE_CHECK_INTERVAL_SECONDS=0.05",
        ],
        None,
    );
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("MEMUSAGE_LIMIT_MB"), "{stderr}");
    let stats: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("stats.json")).unwrap())
            .unwrap();
    assert_eq!(stats["finish_reason"], "memusage_exceeded");
    assert_eq!(stats["memusage/limit_reached"], 1);
    assert!(stats["memusage/max"].as_u64().unwrap() > 1024 * 1024);
    records(&dir.path().join("items.jsonl"));
}
