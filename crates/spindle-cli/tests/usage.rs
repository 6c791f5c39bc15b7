//! Bad input fails before anything is fetched, with exit status 2 and a message saying what to fix.

mod common;

use std::net::Ipv4Addr;
use std::time::Duration;

use common::{crawl, spindle};
use spindle_testsite::{Site, TestServer};

const LIMIT: Duration = Duration::from_secs(30);

fn server() -> TestServer {
    TestServer::builder()
        .host("a.test", Ipv4Addr::new(127, 0, 0, 2), Site::generated(5))
        .start()
        .unwrap()
}

fn assert_usage_error(server: &TestServer, args: &[&str], expect: &[&str]) {
    let run = crawl(server, args, LIMIT);
    assert_eq!(run.code, 2, "{args:?}: {}", run.stderr);
    for needle in expect {
        assert!(
            run.stderr.contains(needle),
            "{args:?}: `{needle}` missing from:\n{}",
            run.stderr
        );
    }
    assert!(server.records().is_empty(), "{args:?} fetched something");
}

#[test]
fn bad_settings() {
    let s = server();
    let url = s.url("a.test", "/");
    assert_usage_error(
        &s,
        &[&url, "-s", "CONCURENT_REQUESTS=4"],
        &["CONCURENT_REQUESTS", "did you mean `CONCURRENT_REQUESTS`"],
    );
    assert_usage_error(
        &s,
        &[&url, "-s", "DOWNLOAD_DELAY=soon"],
        &["DOWNLOAD_DELAY", "soon", "seconds"],
    );
    assert_usage_error(
        &s,
        &[&url, "-s", "CONCURRENT_REQUESTS_PER_DOMAIN=0"],
        &["CONCURRENT_REQUESTS_PER_DOMAIN", "1 or more"],
    );
    assert_usage_error(
        &s,
        &[&url, "-s", "RANDOMIZE_DOWNLOAD_DELAY=maybe"],
        &["RANDOMIZE_DOWNLOAD_DELAY", "true, false"],
    );
    assert_usage_error(&s, &[&url, "-s", "DEPTH_LIMIT"], &["NAME=VALUE"]);
}

#[test]
fn bad_settings_file() {
    let s = server();
    let url = s.url("a.test", "/");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("settings.toml");
    std::fs::write(&file, "CONCURRENT_REQUESTS = 4\nDOWNLOAD_DELAY = \"x\"\n").unwrap();
    let path = file.display().to_string();
    assert_usage_error(
        &s,
        &[&url, "--settings", &path],
        &["settings.toml", "DOWNLOAD_DELAY"],
    );
    std::fs::write(&file, "CONCURRENT_REQUESTS = [\n").unwrap();
    assert_usage_error(&s, &[&url, "--settings", &path], &["settings.toml"]);
    assert_usage_error(
        &s,
        &[&url, "--settings", "/nonexistent/s.toml"],
        &["cannot read settings file"],
    );
}

#[test]
fn a_good_settings_file_is_used_and_command_line_wins() {
    let s = server();
    let url = s.url("a.test", "/");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("settings.toml");
    std::fs::write(
        &file,
        "CLOSESPIDER_PAGECOUNT = 1\nCONCURRENT_REQUESTS = 1\nROBOTSTXT_OBEY = false\n",
    )
    .unwrap();
    let path = file.display().to_string();
    let run = crawl(&s, &[&url, "--settings", &path], LIMIT);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(s.records().len(), 1);
    s.clear_records();
    let run = crawl(
        &s,
        &[&url, "--settings", &path, "-s", "CLOSESPIDER_PAGECOUNT=0"],
        LIMIT,
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(s.records().len(), 6);
}

#[test]
fn bad_urls_and_arguments() {
    let s = server();
    let url = s.url("a.test", "/");
    assert_usage_error(
        &s,
        &[&url, "example.com/no-scheme"],
        &["example.com/no-scheme", "http://"],
    );
    assert_usage_error(&s, &["ftp://a.test/"], &["only http and https"]);
    assert_usage_error(&s, &[&url, "--field", "t=p["], &["`t`", "p["]);
    assert_usage_error(&s, &[&url, "--field", "notassignment"], &["NAME=CSS"]);
    assert_usage_error(&s, &[&url, "--follow", "(unclosed"], &["--follow"]);
    assert_usage_error(&s, &[&url, "-o", "items.txt"], &[".jsonl, .json or .csv"]);
    assert_usage_error(&s, &[&url, "--resolve", "a.test:80"], &["HOST:PORT:ADDR"]);
    assert_usage_error(
        &s,
        &[&url, "--resolve", "a.test:80:nowhere"],
        &["not an IP address"],
    );
}

#[test]
fn missing_url_is_a_usage_error() {
    let run = spindle(&["crawl"], LIMIT);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("URL"), "{}", run.stderr);
}
