//! `--report FILE.html`, opened in a real browser: headless Chromium
//! (Debian's `chromium`; `apt-get install -y chromium` when it is missing)
//! loads the report from disk with the network off, and the DOM it built
//! must hold every chart with its data points, with no console errors.

mod common;

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use spindle_testsite::{Load, Page, Site, TestServer};

fn chromium() -> String {
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        if Command::new(name)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
        {
            return name.to_string();
        }
    }
    panic!(
        "this test needs headless Chromium: install it with `apt-get install -y chromium` \
         (the README's test command does)"
    );
}

/// Runs Chromium headless on `args` with a fresh profile, killed after 90 s.
fn run_chromium(args: &[String], profile: &Path) -> (String, String) {
    let mut child = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--disable-quic",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start chromium");
    let out = child.stdout.take().unwrap();
    let err = child.stderr.take().unwrap();
    let read = |mut r: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let (out, err) = (read(Box::new(out)), read(Box::new(err)));
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("chromium did not finish within 90 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    (out.join().unwrap(), err.join().unwrap())
}

/// Crawls with `args` (start URLs, flags), these `NAME=VALUE` settings and
/// `--report report.html`; returns the run and the report's text.
fn crawl_with_report(
    server: &TestServer,
    args: &[&str],
    settings: &[&str],
) -> (common::Run, String) {
    let mut args = args.to_vec();
    args.extend(["--report", "report.html"]);
    for s in settings {
        args.extend(["-s", s]);
    }
    let run = common::crawl(server, &args, Duration::from_secs(60));
    assert_eq!(run.code, 0, "{}", run.stderr);
    let html = std::fs::read_to_string(run.path("report.html")).unwrap();
    (run, html)
}

#[test]
fn the_report_renders_in_a_browser_with_every_chart() {
    let busy = Arc::new(AtomicUsize::new(0));
    let counter = busy.clone();
    let server = TestServer::builder()
        .host(
            "a.test",
            Ipv4Addr::new(127, 0, 0, 2),
            Site::generated(2000).load(Load::growing(Duration::from_millis(40), 0.5)),
        )
        .host(
            "b.test",
            Ipv4Addr::new(127, 0, 0, 3),
            Site::generated(2000)
                .latency(Duration::from_millis(20))
                .handler(move |_| {
                    let n = counter.fetch_add(1, Ordering::SeqCst);
                    (n % 15 == 14).then(|| {
                        let mut page = Page::new("/", 503, "busy");
                        page.headers.push(("Retry-After".into(), "1".into()));
                        page
                    })
                }),
        )
        .start()
        .unwrap();
    let (a, b) = (server.url("a.test", "/"), server.url("b.test", "/"));
    let (run, html) = crawl_with_report(
        &server,
        &[&a, &b],
        &[
            "AUTOTHROTTLE_ENABLED=true",
            "AUTOTHROTTLE_START_DELAY=0.1",
            "CLOSESPIDER_TIMEOUT=4",
        ],
    );
    let report = run.path("report.html");
    // Self-contained: nothing to fetch, nothing to run.
    for banned in ["<script", "<link", "src=", "url(", "@import"] {
        assert!(!html.contains(banned), "the report contains {banned}");
    }
    assert!(html.contains("What limited the crawl"));
    assert!(
        html.contains("<b>a.test</b>: AutoThrottle delay"),
        "a.test is paced by AutoThrottle"
    );
    assert!(html.contains("a.test") && html.contains("b.test"));

    let profile = tempfile::tempdir().unwrap();
    let url = format!("file://{}", report.display());
    let (dom, log) = run_chromium(&["--dump-dom".to_string(), url.clone()], profile.path());
    let charts = [
        "pages",
        "inflight",
        "delay",
        "concurrency",
        "latency",
        "errors",
        "queued",
    ];
    for id in charts {
        let at = dom
            .find(&format!("<svg id=\"{id}\""))
            .unwrap_or_else(|| panic!("no chart {id} in the DOM:\n{dom}"));
        let svg = &dom[at..at + dom[at..].find("</svg>").unwrap()];
        let points: usize = svg
            .split("points=\"")
            .skip(1)
            .map(|p| p[..p.find('"').unwrap()].split_whitespace().count())
            .sum();
        assert!(points >= 2, "chart {id} has {points} data points");
    }
    for line in log.lines() {
        assert!(
            !line.contains(":CONSOLE") && !line.contains("Uncaught"),
            "console message: {line}"
        );
    }
    // And it paints: a screenshot of a laptop-sized window.
    let shot = run.path("report.png");
    run_chromium(
        &[
            format!("--screenshot={}", shot.display()),
            "--window-size=1440,2200".to_string(),
            "--hide-scrollbars".to_string(),
            url,
        ],
        profile.path(),
    );
    let png = std::fs::read(&shot).expect("a screenshot");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 20_000,
        "{} bytes",
        png.len()
    );
    if let Ok(keep) = std::env::var("SPINDLE_REPORT_SCREENSHOT") {
        std::fs::copy(&shot, keep).unwrap();
    }
}

#[test]
fn the_report_names_the_per_slot_cap_and_what_raising_it_costs() {
    // In one process, and with worker processes (whose latencies travel over IPC).
    for processes in ["1", "2"] {
        per_slot_cap_verdict(processes);
    }
}

fn per_slot_cap_verdict(processes: &str) {
    // One site, slow to answer, with a cap of 2 and plenty to fetch: the per-slot cap limits.
    let server = TestServer::builder()
        .host(
            "a.test",
            Ipv4Addr::new(127, 0, 0, 2),
            Site::generated(2000)
                .links_per_page(10)
                .latency(Duration::from_millis(100)),
        )
        .start()
        .unwrap();
    let url = server.url("a.test", "/");
    let (_run, html) = crawl_with_report(
        &server,
        &[&url, "--processes", processes],
        &[
            "ROBOTSTXT_OBEY=false",
            "CONCURRENT_REQUESTS_PER_DOMAIN=2",
            "CLOSESPIDER_TIMEOUT=3",
        ],
    );
    let verdict = &html[html.find("class=\"verdict\"").expect("a verdict")..];
    let verdict = &verdict[..verdict.find("</p>").unwrap()];
    assert!(verdict.contains("<b>per-slot cap</b>"), "{verdict}");
    assert!(
        verdict.contains("Raising CONCURRENT_REQUESTS_PER_DOMAIN to 4 would send up to 4 requests at a time to a.test"),
        "{verdict}"
    );
    assert!(verdict.contains("at 1 in flight to"), "{verdict}");
}
