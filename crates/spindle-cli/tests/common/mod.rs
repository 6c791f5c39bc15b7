//! Runs the real `spindle` binary against an in-process test server, with a time bound.
#![allow(dead_code)]

use std::collections::{BTreeSet, VecDeque};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use spindle_testsite::{normalize_path, Site, TestServer};

pub struct Run {
    pub code: i32,
    pub stderr: String,
    pub stdout: String,
    pub dir: tempfile::TempDir,
    /// The largest resident set size seen while it ran, in KiB (sampled from /proc).
    pub peak_rss_kib: u64,
    pub elapsed: Duration,
}

impl Run {
    pub fn items(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(self.path("items.jsonl")).expect("items file");
        text.lines()
            .map(|l| serde_json::from_str(l).expect("each line is JSON"))
            .collect()
    }

    pub fn stats(&self) -> Value {
        let text = std::fs::read_to_string(self.path("stats.json")).expect("stats file");
        serde_json::from_str(&text).expect("stats are JSON")
    }

    /// The shortest send-to-send gap the crawler measured at a slot's send
    /// gate, in seconds: its own account, to set beside the server's records.
    pub fn min_send_gap(&self, slot: &str) -> f64 {
        let stats = self.stats();
        stats["slots"][slot]["min_send_gap_seconds"]
            .as_f64()
            .unwrap_or_else(|| panic!("no send gap for slot {slot}: {stats:#}"))
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// `spindle crawl` with the server's --resolve mappings, items to items.jsonl and
/// stats to stats.json in a fresh directory; killed (and the test failed) after `limit`.
pub fn crawl(server: &TestServer, args: &[&str], limit: Duration) -> Run {
    crawl_with(&server.resolve_args(), args, limit)
}

/// As [`crawl`], with explicit `--resolve` mappings.
pub fn crawl_with(resolve: &[String], args: &[&str], limit: Duration) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let mut all: Vec<String> = vec!["crawl".into()];
    all.extend(args.iter().map(|s| s.to_string()));
    for r in resolve {
        all.push("--resolve".into());
        all.push(r.clone());
    }
    if !args.contains(&"-o") {
        all.push("-o".into());
        all.push(dir.path().join("items.jsonl").display().to_string());
    }
    all.push("--stats".into());
    all.push(dir.path().join("stats.json").display().to_string());
    run_in(dir, &all, limit)
}

/// The binary with exactly these arguments.
pub fn spindle(args: &[&str], limit: Duration) -> Run {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    run_in(tempfile::tempdir().unwrap(), &args, limit)
}

/// As [`crawl_with`], with the crawler's descriptor limit (soft and hard) set to `nofile`.
pub fn crawl_with_nofile(resolve: &[String], args: &[&str], limit: Duration, nofile: u64) -> Run {
    let mut all: Vec<&str> = vec!["--nofile-limit-for-test"];
    let nofile = nofile.to_string();
    all.push(&nofile);
    all.extend(args);
    crawl_with(resolve, &all, limit)
}

fn run_in(dir: tempfile::TempDir, args: &[String], limit: Duration) -> Run {
    // `--nofile-limit-for-test N` (first after `crawl`) runs it under `ulimit -n N`.
    let (wrapper, args): (Vec<String>, Vec<String>) = match args {
        [crawl, flag, n, rest @ ..] if flag == "--nofile-limit-for-test" => (
            vec![
                "-c".into(),
                format!("ulimit -n {n} && exec \"$0\" \"$@\""),
                env!("CARGO_BIN_EXE_spindle").into(),
            ],
            std::iter::once(crawl.clone())
                .chain(rest.iter().cloned())
                .collect(),
        ),
        _ => (Vec::new(), args.to_vec()),
    };
    let program = if wrapper.is_empty() {
        env!("CARGO_BIN_EXE_spindle")
    } else {
        "sh"
    };
    let mut child = Command::new(program)
        .args(&wrapper)
        .args(&args)
        .current_dir(dir.path())
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start spindle");
    let mut stdout_pipe = child.stdout.take().unwrap();
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout_pipe.read_to_string(&mut s);
        s
    });
    let mut stderr_pipe = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr_pipe.read_to_string(&mut s);
        s
    });
    let started = Instant::now();
    let deadline = started + limit;
    let mut peak_rss_kib = 0;
    let status_file = format!("/proc/{}/status", child.id());
    let status = loop {
        // VmHWM is the kernel's own high-water mark, so sampling misses no peak.
        if let Some(hwm) = std::fs::read_to_string(&status_file).ok().and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        }) {
            peak_rss_kib = peak_rss_kib.max(hwm);
        }
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("spindle {args:?} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Run {
        code: status.code().unwrap_or(-1),
        stderr: reader.join().unwrap(),
        stdout: out_reader.join().unwrap(),
        dir,
        peak_rss_kib,
        elapsed: started.elapsed(),
    }
}

/// Asserts a delay as a floor, with no slack, on both sides: the crawler's
/// own sends through the slot's gate, and the records' start times, which
/// are the kernel's arrival stamps and fall inside the crawler's `write`
/// call (see `spindle_testsite::arrival`).
#[track_caller]
pub fn assert_delay_floor(
    run: &Run,
    slot: &str,
    records: &[spindle_testsite::Record],
    delay: Duration,
) {
    let sent = run.min_send_gap(slot);
    assert!(
        sent >= delay.as_secs_f64(),
        "the crawler's send gate let two sends through {sent} s apart, under the {delay:?} delay"
    );
    let mut by_start: Vec<_> = records.iter().collect();
    by_start.sort_by_key(|r| r.start);
    let closest = by_start
        .windows(2)
        .min_by_key(|w| w[1].start - w[0].start)
        .expect("at least two requests");
    let gap = closest[1].start - closest[0].start;
    assert!(
        gap >= delay,
        "{} and {} reached the server {gap:?} apart, under the {delay:?} delay, though the \
         crawler's send gate kept its sends at least {sent} s apart: the way from the gate to \
         the socket (in-process dispatch, or the hand-off to a worker process) closed the gap",
        closest[0].path,
        closest[1].path,
    );
}

/// The records of pages, leaving out robots.txt fetches.
pub fn pages(records: Vec<spindle_testsite::Record>) -> Vec<spindle_testsite::Record> {
    records
        .into_iter()
        .filter(|r| r.path != "/robots.txt")
        .collect()
}

pub fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// `spindle crawl` of a.test's `/` in the background, output to items.jsonl and
/// stats.json in `dir`, robots.txt off, with extra arguments and environment.
pub fn background(server: &TestServer, dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_spindle"));
    cmd.arg("crawl").arg(server.url("a.test", "/"));
    for r in server.resolve_args() {
        cmd.args(["--resolve", &r]);
    }
    cmd.args(["--stats", "stats.json", "-s", "ROBOTSTXT_OBEY=false"])
        .args(args)
        .current_dir(dir)
        .env("RUST_LOG", "warn")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if !args.contains(&"-o") {
        cmd.args(["-o", "items.jsonl"]);
    }
    cmd.spawn().expect("start spindle")
}

/// Waits for a background crawl; kills it and fails the test after `limit`.
pub fn wait(child: &mut Child, limit: Duration) -> i32 {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code().unwrap_or(-1);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("spindle did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends a signal with kill(1), e.g. `signal("-INT", pid)`.
pub fn signal(signal: &str, pid: u32) {
    let ok = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .unwrap();
    assert!(ok.success(), "kill {signal} {pid}");
}

/// Every page reachable from `/` by walking the site's own link graph, as
/// paths; `cut` is a page whose links are not followed.
pub fn reachable(site: &Site, origin: &str, cut: Option<&str>) -> BTreeSet<String> {
    let mut seen = BTreeSet::from(["/".to_string()]);
    let mut todo = VecDeque::from(["/".to_string()]);
    while let Some(p) = todo.pop_front() {
        if Some(p.as_str()) == cut {
            continue;
        }
        for href in site.links(&p, origin) {
            let href = href.strip_prefix(origin).unwrap_or(&href);
            let q = normalize_path(href.split('#').next().unwrap());
            if seen.insert(q.clone()) {
                todo.push_back(q);
            }
        }
    }
    seen
}
