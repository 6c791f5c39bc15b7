//! Benchmark: fixed per-slot concurrency 1..=32 against AutoThrottle's
//! adaptive mode, on a test-site host that serves K requests at a time (100 ms
//! each) and queues the rest. K is not told to the crawler. Throughput and the
//! server's queue are measured by the server, after a warm-up.
//!
//! ```text
//! cargo run --release -p spindle --example adaptive_sweep -- [K] [SECONDS] [OUT.svg]
//! ```
//! `bench/adaptive.sh` runs it and keeps the results. It prints a Markdown
//! table and writes an SVG chart of both.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use spindle::{Crawler, LinkExtractor, Output, Request, Response, Settings, Spider, SpiderError};
use spindle_testsite::{Load, Site, TestServer};

struct Follow {
    start: Request,
}

impl Spider for Follow {
    fn name(&self) -> &str {
        "sweep"
    }
    fn start_requests(&self) -> Vec<Request> {
        vec![self.start.clone()]
    }
    fn parse(&self, response: &Response) -> Result<Output, SpiderError> {
        let page = LinkExtractor::new().extract(
            &response.body,
            &response.url,
            response.charset().as_deref(),
        );
        Ok(Output {
            requests: page.links.into_iter().map(Request::new).collect(),
            ..Output::default()
        })
    }
}

struct Measured {
    rate: f64,
    waiting: f64,
    in_flight: f64,
}

fn measure(k: usize, seconds: u64, warmup: u64, extra: &[(&str, &str)]) -> Measured {
    let load = Load::capacity(k, Duration::from_millis(100));
    let ip = Ipv4Addr::new(127, 0, 0, 2);
    let server = TestServer::builder()
        .host(
            "a.test",
            ip,
            Site::generated(100_000)
                .links_per_page(10)
                .load(load.clone()),
        )
        .record(false)
        .start()
        .expect("test server");
    let mut settings = Settings::default()
        .with("CONCURRENT_REQUESTS", "64")
        .and_then(|s| s.with("CLOSESPIDER_TIMEOUT", &(seconds + warmup).to_string()))
        .and_then(|s| s.with("LOGSTATS_INTERVAL", "0"))
        .expect("settings");
    for (name, value) in extra {
        settings.set(name, value).expect("setting");
    }
    let spider = Follow {
        start: Request::get(&server.url("a.test", "/")).unwrap(),
    };
    let crawler = Crawler::new(spider, settings).resolve("a.test", IpAddr::V4(ip));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let crawl = runtime.spawn(crawler.run());
    std::thread::sleep(Duration::from_secs(warmup));
    load.reset_stats();
    std::thread::sleep(Duration::from_secs(seconds));
    let stats = load.stats();
    runtime.block_on(crawl).unwrap().expect("crawl");
    let window = Duration::from_secs(seconds);
    Measured {
        rate: stats.requests as f64 / window.as_secs_f64(),
        waiting: stats.mean_waiting_over(window),
        in_flight: stats.in_flight_seconds / window.as_secs_f64(),
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let k: usize = args.next().map_or(6, |a| a.parse().expect("K"));
    let seconds: u64 = args.next().map_or(4, |a| a.parse().expect("SECONDS"));
    let svg_path = args.next();
    let capacity = k as f64 * 10.0;
    println!("Host: {k} at a time, 100 ms each (capacity {capacity:.0} requests/s); {seconds} s measured after a 1-3 s warm-up.\n");
    println!("| per-slot concurrency | requests/s | mean waiting at the server | mean in flight |");
    println!("|---|---|---|---|");
    let mut fixed = Vec::new();
    for c in 1..=32 {
        let m = measure(
            k,
            seconds,
            1,
            &[("CONCURRENT_REQUESTS_PER_DOMAIN", &c.to_string())],
        );
        println!(
            "| {c} | {:.1} | {:.2} | {:.2} |",
            m.rate, m.waiting, m.in_flight
        );
        fixed.push(m);
    }
    let adaptive = measure(
        k,
        seconds * 2,
        3,
        &[
            ("CONCURRENT_REQUESTS_PER_DOMAIN", "32"),
            ("AUTOTHROTTLE_ENABLED", "true"),
            ("AUTOTHROTTLE_MODE", "adaptive"),
        ],
    );
    println!(
        "| adaptive (cap 32) | {:.1} | {:.2} | {:.2} |",
        adaptive.rate, adaptive.waiting, adaptive.in_flight
    );
    let best = fixed.iter().map(|m| m.rate).fold(0.0, f64::max);
    println!(
        "\nAdaptive: {:.0}% of the best fixed concurrency's throughput ({best:.1}/s), mean waiting {:.2}.",
        100.0 * adaptive.rate / best,
        adaptive.waiting
    );
    if let Some(path) = svg_path {
        std::fs::write(&path, chart(&fixed, &adaptive, capacity)).expect("write the chart");
        println!("Chart: {path}");
    }
}

/// Throughput and server queue against fixed concurrency, with the adaptive run as a marker.
fn chart(fixed: &[Measured], adaptive: &Measured, capacity: f64) -> String {
    let (w, h, left, right, top, bottom) = (640.0, 360.0, 56.0, 56.0, 30.0, 44.0);
    let pw = w - left - right;
    let ph = h - top - bottom;
    let max_rate = (capacity * 1.2).max(1.0);
    let max_wait = fixed
        .iter()
        .map(|m| m.waiting)
        .fold(adaptive.waiting, f64::max)
        .max(1.0);
    let x = |c: f64| left + (c - 1.0) / 31.0 * pw;
    let yr = |r: f64| top + ph - r / max_rate * ph;
    let yw = |q: f64| top + ph - q / max_wait * ph;
    let mut s = format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">
<rect width="{w}" height="{h}" fill="#fff"/>
<text x="{left}" y="18" font-weight="bold">Fixed per-slot concurrency vs adaptive, host serving {k} at a time</text>
"##,
        k = (capacity / 10.0) as usize
    );
    for i in 0..=4 {
        let r = max_rate * i as f64 / 4.0;
        let q = max_wait * i as f64 / 4.0;
        let y = yr(r);
        s += &format!(
            r##"<line x1="{left}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end" fill="#1f77b4">{r:.0}</text><text x="{}" y="{:.1}" fill="#d62728">{q:.1}</text>
"##,
            left + pw,
            left - 6.0,
            y + 4.0,
            left + pw + 6.0,
            y + 4.0
        );
    }
    for c in [1, 4, 8, 12, 16, 20, 24, 28, 32] {
        s += &format!(
            r##"<text x="{:.1}" y="{}" text-anchor="middle">{c}</text>
"##,
            x(c as f64),
            top + ph + 16.0
        );
    }
    let line = |ys: &dyn Fn(&Measured) -> f64| {
        fixed
            .iter()
            .enumerate()
            .map(|(i, m)| format!("{:.1},{:.1}", x(i as f64 + 1.0), ys(m)))
            .collect::<Vec<_>>()
            .join(" ")
    };
    s += &format!(
        r##"<polyline fill="none" stroke="#1f77b4" stroke-width="2" points="{}"/>
<polyline fill="none" stroke="#d62728" stroke-width="2" stroke-dasharray="5,3" points="{}"/>
"##,
        line(&|m| yr(m.rate)),
        line(&|m| yw(m.waiting))
    );
    let ax = x(adaptive.in_flight.clamp(1.0, 32.0));
    s += &format!(
        r##"<circle cx="{ax:.1}" cy="{:.1}" r="6" fill="#2ca02c"/><circle cx="{ax:.1}" cy="{:.1}" r="5" fill="none" stroke="#2ca02c" stroke-width="2"/>
<text x="{:.1}" y="{:.1}" fill="#2ca02c">adaptive: {:.1}/s, queue {:.2}</text>
<text x="{}" y="{}" text-anchor="middle">per-slot concurrency (adaptive placed at its mean in flight)</text>
<text x="14" y="{}" fill="#1f77b4" transform="rotate(-90 14 {})" text-anchor="middle">requests/s (solid)</text>
<text x="{}" y="{}" fill="#d62728" transform="rotate(90 {} {})" text-anchor="middle">mean waiting at the server (dashed)</text>
</svg>
"##,
        yr(adaptive.rate),
        yw(adaptive.waiting),
        ax + 10.0,
        yr(adaptive.rate) - 10.0,
        adaptive.rate,
        adaptive.waiting,
        left + pw / 2.0,
        h - 8.0,
        top + ph / 2.0,
        top + ph / 2.0,
        w - 12.0,
        top + ph / 2.0,
        w - 12.0,
        top + ph / 2.0,
    );
    s
}
