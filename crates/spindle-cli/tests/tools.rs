//! `spindle fetch`, `spindle parse` and `spindle settings`.

mod common;

use std::net::Ipv4Addr;
use std::time::Duration;

use common::spindle;
use spindle_testsite::{Site, TestServer};

const LIMIT: Duration = Duration::from_secs(60);

const HOME: &str = r#"<html><head><title>Home</title></head><body>
<h1>Welcome <a href="/about">¶</a></h1><a href="/p/1">one</a><a href="/private/x">x</a>
<a href="http://elsewhere.test/">away</a></body></html>"#;

fn server() -> TestServer {
    TestServer::builder()
        .host(
            "a.test",
            Ipv4Addr::new(127, 0, 0, 2),
            Site::pages([("/", 200, HOME), ("/private/x", 200, "secret")])
                .redirect("/old", 301, "/")
                .robots_txt("User-agent: *\nDisallow: /private/\n"),
        )
        .start()
        .unwrap()
}

fn with_resolve<'a>(s: &'a [String], args: &[&'a str]) -> Vec<&'a str> {
    let mut all = args.to_vec();
    for r in s {
        all.extend(["--resolve", r.as_str()]);
    }
    all
}

#[test]
fn fetch_prints_the_body_as_the_crawler_gets_it() {
    let s = server();
    let resolve = s.resolve_args();
    let old = s.url("a.test", "/old");
    let run = spindle(
        &with_resolve(&resolve, &["fetch", &old, "-H", "X-Test: 1"]),
        LIMIT,
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.stdout, HOME, "the redirect was followed");
    let rec = s.records();
    assert!(
        rec.iter().any(|r| r.path == "/robots.txt"),
        "robots.txt first"
    );

    let headers = spindle(
        &with_resolve(&resolve, &["fetch", "--headers", &old]),
        LIMIT,
    );
    assert_eq!(headers.code, 0, "{}", headers.stderr);
    assert!(headers.stdout.contains("< 200 "), "{}", headers.stdout);
    assert!(headers
        .stdout
        .to_ascii_lowercase()
        .contains("< content-type: text/html"));
    assert!(
        headers.stdout.contains("> user-agent: spindle/"),
        "{}",
        headers.stdout
    );

    let private = s.url("a.test", "/private/x");
    let denied = spindle(&with_resolve(&resolve, &["fetch", &private]), LIMIT);
    assert_eq!(denied.code, 1);
    assert!(
        denied.stderr.contains("robots.txt forbids"),
        "{}",
        denied.stderr
    );
}

#[test]
fn parse_prints_the_item_and_the_links_a_crawl_would_follow() {
    let s = server();
    let resolve = s.resolve_args();
    let home = s.url("a.test", "/");
    let run = spindle(
        &with_resolve(
            &resolve,
            &[
                "parse",
                &home,
                "--field",
                "h1=h1::text",
                "--field",
                "t=//title/text()",
                "--deny",
                "private",
            ],
        ),
        LIMIT,
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let (item, links) = run.stdout.split_once("# Requests").expect("two sections");
    let item: serde_json::Value =
        serde_json::from_str(item.split_once('\n').unwrap().1).expect("the item as JSON");
    assert_eq!(item["h1"], "Welcome ");
    assert_eq!(item["t"], "Home");
    let links: Vec<&str> = links.lines().skip(1).collect();
    assert_eq!(links, [s.url("a.test", "/about"), s.url("a.test", "/p/1")]);
    assert_eq!(
        s.records()
            .iter()
            .filter(|r| r.path != "/robots.txt")
            .count(),
        1,
        "one page, no crawl"
    );
}

#[test]
fn settings_prints_values_and_where_they_came_from() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("s.toml");
    std::fs::write(&file, "DOWNLOAD_DELAY = 0.5\nCONCURRENT_REQUESTS = 4\n").unwrap();
    let file = file.display().to_string();
    let run = spindle(
        &[
            "settings",
            "--settings",
            &file,
            "-s",
            "CONCURRENT_REQUESTS=9",
        ],
        LIMIT,
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let line = |name: &str| {
        run.stdout
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} missing: {}", run.stdout))
            .to_string()
    };
    assert!(
        line("DOWNLOAD_DELAY").contains("= 0.5  (settings file"),
        "{}",
        line("DOWNLOAD_DELAY")
    );
    assert!(line("CONCURRENT_REQUESTS").contains("= 9  (-s CONCURRENT_REQUESTS=9)"));
    assert!(line("DOWNLOAD_TIMEOUT").contains("= 180  (default)"));
    assert!(line("ROBOTSTXT_OBEY").contains("= true  (command-line default)"));

    let one = spindle(
        &["settings", "DOWNLOAD_DELAY", "-s", "DOWNLOAD_DELAY=2"],
        LIMIT,
    );
    assert_eq!(one.stdout, "2\n");
    let bad = spindle(&["settings", "DOWNLOAD_DELEY"], LIMIT);
    assert_eq!(bad.code, 2);
    assert!(
        bad.stderr.contains("did you mean `DOWNLOAD_DELAY`"),
        "{}",
        bad.stderr
    );
}

#[test]
fn shell_evaluates_each_line_as_a_selector() {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let s = server();
    let home = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_spindle"));
    cmd.args(["shell", &s.url("a.test", "/")]);
    for r in s.resolve_args() {
        cmd.args(["--resolve", &r]);
    }
    let mut child = cmd
        .env("HOME", home.path())
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"h1::text\n//a/@href\np[\nh6\nquit\n")
        .unwrap();
    let deadline = std::time::Instant::now() + LIMIT;
    while child.try_wait().unwrap().is_none() {
        assert!(std::time::Instant::now() < deadline, "shell did not finish");
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(r#"[0] "Welcome ""#), "{stdout}");
    assert!(
        stdout.contains(&format!("[1] \"{}\"", s.url("a.test", "/p/1"))),
        "{stdout}"
    );
    assert!(
        stdout.contains("error: invalid CSS selector `p[`"),
        "{stdout}"
    );
    assert!(stdout.contains("(no match)"), "{stdout}");
}
