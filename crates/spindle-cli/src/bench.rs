//! `spindle bench`: how fast spindle crawls, with no network and no setup, like `scrapy bench`.
//!
//! It serves a generated site in-process on loopback (each page links to 20 random pages
//! out of 100,000, as Scrapy's bench server does), crawls it with every link followed for
//! a fixed time, politeness off (the per-domain cap equals the global cap, no delay), and
//! reports pages per minute. The server shares the machine's cores with the crawler, as
//! Scrapy's does.

use std::net::{IpAddr, Ipv4Addr};

use anyhow::{bail, Context};
use spindle::{Crawler, Settings};
use spindle_testsite::{Site, TestServer};

use crate::args::BenchArgs;
use crate::spider::{FollowSpider, SpiderConfig};
use crate::Failure;

const HOST: &str = "bench.test";

pub fn run(args: BenchArgs) -> Result<(), Failure> {
    let plan = check(&args).map_err(Failure::Usage)?;
    crate::tune_malloc();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Runtime(e.into()))?;
    runtime
        .block_on(crawl(args, plan))
        .map_err(Failure::Runtime)
}

fn check(args: &BenchArgs) -> anyhow::Result<Settings> {
    if !(args.seconds > 0.0 && args.seconds <= spindle::MAX_SECONDS) {
        bail!(
            "--seconds `{}` is out of range: give a number of seconds above 0 and at most {}",
            args.seconds,
            spindle::MAX_SECONDS
        );
    }
    if args.concurrency == 0 || args.pages == 0 {
        bail!("--concurrency and --pages must be at least 1");
    }
    let mut settings = Settings::default();
    for assignment in [
        format!("CONCURRENT_REQUESTS={}", args.concurrency),
        format!("CONCURRENT_REQUESTS_PER_DOMAIN={}", args.concurrency),
        "DOWNLOAD_DELAY=0".to_string(),
        format!("CLOSESPIDER_TIMEOUT={}", args.seconds),
        "LOGSTATS_INTERVAL=1".to_string(),
    ] {
        settings.set_assignment(&assignment)?;
    }
    for assignment in &args.settings {
        settings.set_assignment(assignment)?;
    }
    Ok(settings)
}

async fn crawl(args: BenchArgs, settings: Settings) -> anyhow::Result<()> {
    let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
    // The site's `/` is one of its pages: `--pages N` serves `/` and N − 1 pages under `/p/`.
    let site = Site::generated(args.pages - 1).links_per_page(args.links);
    let server = TestServer::builder()
        .host(HOST, loopback, site)
        .record(false)
        .start()
        .context("cannot start the local bench site")?;
    let start = server.url(HOST, "/");
    let spider = FollowSpider::new(SpiderConfig {
        start_urls: vec![start.clone()],
        allowed_domains: vec![HOST.to_string()],
        ..SpiderConfig::default()
    })?;
    tracing::info!(
        "bench site {start}: {} pages, {} links each; crawling for {}s with {} requests at once",
        args.pages,
        args.links,
        args.seconds,
        args.concurrency
    );
    let report = Crawler::new(spider, settings)
        .resolve(HOST, loopback)
        .run()
        .await?;
    drop(server);

    let pages = report.get("response_received_count");
    let secs = report.elapsed_time_seconds.max(1e-9);
    let per_min = pages as f64 / secs * 60.0;
    if let Some(path) = &args.stats {
        std::fs::write(path, report.to_json())
            .with_context(|| format!("cannot write stats to {}", path.display()))?;
    }
    let failed = report.get("downloader/exception_count");
    if report.finish_reason == "finished" {
        println!(
            "(every page of the {}-page site was crawled before {} s; --pages sets a bigger site)",
            args.pages, args.seconds
        );
    }
    println!(
        "spindle bench: {pages} pages in {secs:.2} s = {per_min:.0} pages/min \
         ({:.0} pages/s; {} requests at once, {failed} failed)",
        pages as f64 / secs,
        args.concurrency,
    );
    Ok(())
}
