//! The `headings` example works as its doc says (issue 13, defect 5): it follows every link of
//! the site it is given, writes items to stdout, and exits 1 when nothing could be fetched.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use spindle_testsite::{Site, TestServer};

/// `cargo test` builds the examples next to the test binaries: target/<profile>/examples.
fn example() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap().join("examples");
    let path = dir.join(format!("headings{}", std::env::consts::EXE_SUFFIX));
    assert!(path.exists(), "{} not built", path.display());
    path
}

fn run(args: &[&str]) -> Output {
    let mut child = Command::new(example())
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "the example did not finish in time"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn headings_follows_every_link_and_fails_when_nothing_answers() {
    let site = Site::pages([
        (
            "/",
            200,
            r#"<title>Home</title><a href="/about">a</a><a href="/docs/x">d</a>"#,
        ),
        ("/about", 200, "<title>About</title><h1>Us</h1>"),
        ("/docs/x", 200, "<title>X</title>"),
    ]);
    let server = TestServer::builder()
        .host("127.0.0.1", Ipv4Addr::LOCALHOST, site)
        .start()
        .unwrap();
    let out = run(&[&server.url("127.0.0.1", "/")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let items: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(items.len(), 3, "{items:?}");
    assert!(items.iter().any(|i| i["h1"] == "Us"));

    let out = run(&["http://127.0.0.1:1/"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no page"));
}
