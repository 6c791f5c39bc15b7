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
    assert_usage_error(&s, &[&url, "--field", "notassignment"], &["NAME=SELECTOR"]);
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

#[test]
fn bad_selectors_fail_before_any_fetch() {
    let s = server();
    let url = s.url("a.test", "/");
    assert_usage_error(
        &s,
        &[&url, "--field", "t=p["],
        &["--field `t`", "invalid CSS selector `p[`"],
    );
    assert_usage_error(
        &s,
        &[&url, "--field", "t=//a["],
        &["--field `t`", "invalid XPath `//a[`"],
    );
    assert_usage_error(&s, &[&url, "--field", "t=h1::bogus"], &["h1::bogus"]);
    assert_usage_error(
        &s,
        &[&url, "--field-all", "links"],
        &["--field-all `links`", "NAME=SELECTOR"],
    );
    assert_usage_error(&s, &[&url, "--restrict-css", "nav["], &["--restrict-css"]);
    assert_usage_error(&s, &[&url, "--deny", "("], &["--deny"]);
    assert_usage_error(&s, &[&url, "-L", "LOUD"], &["-L `LOUD`", "WARNING"]);
}

/// Issue 13, defect 1: an empty or URL-shaped domain is refused, not silently wrong.
#[test]
fn allow_domain_must_be_a_host_name() {
    let s = server();
    let url = s.url("a.test", "/");
    assert_usage_error(
        &s,
        &[&url, "--allow-domain", ""],
        &["--allow-domain is empty"],
    );
    assert_usage_error(
        &s,
        &[&url, "--allow-domain", "http://py.docs.test/"],
        &["not a host name", "--allow-domain py.docs.test"],
    );
    assert_usage_error(
        &s,
        &[&url, "--deny-domain", "b.test:80"],
        &["--deny-domain", "not a host name"],
    );
}

/// Issue 13, defects 3 and 4: durations are bounded and each message says what is wrong.
#[test]
fn durations_are_bounded_and_messages_name_the_problem() {
    let s = server();
    let url = s.url("a.test", "/");
    assert_usage_error(
        &s,
        &[&url, "-s", "LOGSTATS_INTERVAL=1e-9"],
        &["LOGSTATS_INTERVAL", "0.1"],
    );
    assert_usage_error(
        &s,
        &[&url, "-s", "LOGSTATS_INTERVAL=1e19"],
        &["LOGSTATS_INTERVAL", "31536000"],
    );
    assert_usage_error(
        &s,
        &[&url, "-s", "DOWNLOAD_DELAY=1e19"],
        &["DOWNLOAD_DELAY", "31536000"],
    );
    assert_usage_error(
        &s,
        &[&url, "-s", "CLOSESPIDER_TIMEOUT=inf"],
        &["CLOSESPIDER_TIMEOUT", "31536000"],
    );
    assert_usage_error(
        &s,
        &[&url, "-s", "CONCURRENT_REQUESTS=99999999999999999999999"],
        &["CONCURRENT_REQUESTS", "no larger than"],
    );
    assert_usage_error(
        &s,
        &[&url, "-s", r#"DOWNLOAD_SLOTS={"x":{"concurrency":0}}"#],
        &["DOWNLOAD_SLOTS", "`concurrency` of 1 or more for slot `x`"],
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "CONCURRENT_REQUESTS = 4\nDOWNLOAD_DELAY = = 3\n").unwrap();
    let run = crawl(
        &s,
        &[&url, "--settings", &file.display().to_string()],
        LIMIT,
    );
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert_eq!(
        run.stderr.matches("settings file").count(),
        1,
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("line 2, column"), "{}", run.stderr);

    let bench = spindle(&["bench", "--seconds", "1e20"], LIMIT);
    assert_eq!(bench.code, 2);
    assert!(
        bench.stderr.contains("--seconds") && !bench.stderr.contains("CLOSESPIDER"),
        "{}",
        bench.stderr
    );
    assert!(s.records().is_empty());
}
