//! Ctrl-C, sent as a real SIGINT to the real process.

mod common;

use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{background, signal, wait};
use serde_json::Value;
use spindle_testsite::{Site, TestServer};

fn slow_site() -> TestServer {
    TestServer::builder()
        .host(
            "a.test",
            Ipv4Addr::new(127, 0, 0, 2),
            Site::generated(5000)
                .links_per_page(10)
                .latency(Duration::from_millis(400)),
        )
        .start()
        .unwrap()
}

#[test]
fn ctrl_c_stops_gracefully_and_flushes_everything() {
    let server = slow_site();
    let dir = tempfile::tempdir().unwrap();
    let mut child = background(&server, dir.path(), &["-o", "items.json"], &[]);
    std::thread::sleep(Duration::from_millis(2000));
    signal("-INT", child.id());
    let sent = server.now();
    assert_eq!(wait(&mut child, Duration::from_secs(10)), 0);

    let records = server.records();
    // In-flight requests finished (none abandoned); nothing new started after the signal.
    assert!(records.iter().all(|r| r.status == 200), "{records:?}");
    let late = records
        .iter()
        .filter(|r| r.start > sent + Duration::from_millis(50))
        .count();
    assert_eq!(late, 0, "requests started after Ctrl-C");
    let items: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("items.json")).unwrap())
            .unwrap();
    assert_eq!(
        items.as_array().unwrap().len(),
        records.len(),
        "every page downloaded is in the output"
    );
    let stats: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("stats.json")).unwrap())
            .unwrap();
    assert_eq!(stats["finish_reason"], "shutdown");
}

#[test]
fn a_second_ctrl_c_stops_at_once_on_a_whole_record() {
    let server = slow_site();
    let dir = tempfile::tempdir().unwrap();
    let mut child = background(&server, dir.path(), &[], &[]);
    std::thread::sleep(Duration::from_millis(1500));
    signal("-INT", child.id());
    std::thread::sleep(Duration::from_millis(30));
    signal("-INT", child.id());
    let code = wait(&mut child, Duration::from_secs(2));
    assert_eq!(code, 130);
    let text = std::fs::read_to_string(dir.path().join("items.jsonl")).unwrap();
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "ends on a whole line"
    );
    for line in text.lines() {
        serde_json::from_str::<Value>(line).expect("every line is a whole record");
    }
    assert!(text.lines().count() > 0);
}

#[test]
fn logstats_line_every_interval() {
    let server = slow_site();
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_spindle"));
    cmd.arg("crawl").arg(server.url("a.test", "/"));
    for r in server.resolve_args() {
        cmd.args(["--resolve", &r]);
    }
    let out = cmd
        .args([
            "-s",
            "LOGSTATS_INTERVAL=0.5",
            "-s",
            "CLOSESPIDER_TIMEOUT=2.2",
        ])
        .current_dir(dir.path())
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| l.contains("Crawled ")).collect();
    assert!((3..=5).contains(&lines.len()), "{stderr}");
    assert!(
        lines
            .iter()
            .all(|l| l.contains(" pages (at ") && l.contains(" pages/min), scraped ")),
        "{lines:?}"
    );
}

#[test]
fn a_live_progress_line_when_stderr_is_a_terminal() {
    let server = slow_site();
    let dir = tempfile::tempdir().unwrap();
    let mut line = format!(
        "{} crawl {}",
        env!("CARGO_BIN_EXE_spindle"),
        server.url("a.test", "/")
    );
    for r in server.resolve_args() {
        line.push_str(&format!(" --resolve {r}"));
    }
    line.push_str(" -s CLOSESPIDER_TIMEOUT=1.5 -s LOGSTATS_INTERVAL=0");
    // `script` runs the crawler on a pseudo-terminal and records what it drew.
    let typescript = dir.path().join("typescript");
    let status = Command::new("script")
        .args(["-q", "-e", "-c", &line])
        .arg(&typescript)
        .current_dir(dir.path())
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let screen = String::from_utf8_lossy(&std::fs::read(&typescript).unwrap()).to_string();
    assert!(screen.contains(" pages ("), "no progress line: {screen}");
    assert!(
        screen.contains(" in flight, ") && screen.contains(" queued"),
        "{screen}"
    );

    // Not on a pipe: the same crawl draws nothing.
    let out = Command::new("sh")
        .args(["-c", &line])
        .current_dir(dir.path())
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&out.stderr).contains(" queued"));
}

/// Issue 13: SIGTERM stops gracefully, as the first Ctrl-C does: stats written, exit 0.
#[test]
fn sigterm_stops_gracefully() {
    let server = slow_site();
    let dir = tempfile::tempdir().unwrap();
    let mut child = background(&server, dir.path(), &[], &[]);
    std::thread::sleep(Duration::from_millis(1500));
    signal("-TERM", child.id());
    assert_eq!(wait(&mut child, Duration::from_secs(10)), 0);
    let stats: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("stats.json")).unwrap())
            .unwrap();
    assert_eq!(stats["finish_reason"], "shutdown");
    let items = std::fs::read_to_string(dir.path().join("items.jsonl")).unwrap();
    assert_eq!(
        items.lines().count() as u64,
        stats["item_scraped_count"].as_u64().unwrap()
    );
}

/// Issue 13: log colours only on a terminal, and not there either with NO_COLOR set.
#[test]
fn no_colour_codes_with_no_color_on_a_terminal() {
    let server = TestServer::builder()
        .host("a.test", Ipv4Addr::new(127, 0, 0, 2), Site::generated(3))
        .start()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut line = format!(
        "{} crawl {} -L INFO",
        env!("CARGO_BIN_EXE_spindle"),
        server.url("a.test", "/")
    );
    for r in server.resolve_args() {
        line.push_str(&format!(" --resolve {r}"));
    }
    let screen = |no_color: Option<&str>| {
        let typescript = dir.path().join("typescript");
        let mut cmd = Command::new("script");
        cmd.args(["-q", "-e", "-c", &line])
            .arg(&typescript)
            .current_dir(dir.path())
            .env_remove("NO_COLOR")
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        if let Some(v) = no_color {
            cmd.env("NO_COLOR", v);
        }
        assert!(cmd.status().unwrap().success());
        String::from_utf8_lossy(&std::fs::read(&typescript).unwrap()).to_string()
    };
    // tracing colours the level (INFO in green) and dims the timestamp.
    let coloured = screen(None);
    assert!(
        coloured.contains("\u{1b}[32m"),
        "colour on a terminal: {coloured:?}"
    );
    let plain = screen(Some("1"));
    assert!(plain.contains("spider opened"), "{plain:?}");
    assert!(
        !plain.contains("\u{1b}[32m") && !plain.contains("\u{1b}[2m"),
        "{plain:?}"
    );
}
