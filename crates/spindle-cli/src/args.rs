//! The command line, as clap sees it.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "spindle",
    version,
    about = "A fast, polite web crawler with Scrapy's concurrency settings"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

// Parsed once per run: the size of the crawl variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Crawl from one or more start URLs, following links within the allowed domains.
    Crawl(Box<CrawlArgs>),
    /// Measure crawl speed on a local generated site, like `scrapy bench`: no network, no setup.
    #[cfg(feature = "bench")]
    Bench(BenchArgs),
    /// Inspect a job directory (JOBDIR).
    #[command(subcommand)]
    Job(JobCommand),
}

#[derive(Subcommand, Debug)]
pub enum JobCommand {
    /// What a job holds: pages done, queued, seen, per-slot backlog, last commit, finished or not.
    Status {
        /// The job directory (as given to -s JOBDIR=DIR or --job DIR).
        #[arg(value_name = "DIR")]
        dir: PathBuf,
        /// Print it as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[cfg(feature = "bench")]
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// How long to crawl (CLOSESPIDER_TIMEOUT); requests in flight then finish.
    #[arg(long, default_value_t = 10.0, value_name = "SECONDS")]
    pub seconds: f64,

    /// Requests at once (CONCURRENT_REQUESTS, and CONCURRENT_REQUESTS_PER_DOMAIN: politeness is off).
    #[arg(long, default_value_t = 16, value_name = "N")]
    pub concurrency: usize,

    /// Pages on the generated site.
    #[arg(long, default_value_t = 100_000, value_name = "N")]
    pub pages: usize,

    /// Links on each page, to random other pages.
    #[arg(long, default_value_t = 20, value_name = "N")]
    pub links: usize,

    /// Write the final stats as JSON to FILE.
    #[arg(long = "stats", value_name = "FILE")]
    pub stats: Option<PathBuf>,

    /// Set a setting (repeatable), e.g. -s JOBDIR=DIR; applied after the bench's own.
    #[arg(short = 's', long = "set", value_name = "NAME=VALUE")]
    pub settings: Vec<String>,
}

#[derive(Args, Debug)]
pub struct CrawlArgs {
    /// Start URLs (http or https).
    #[arg(required = true, value_name = "URL")]
    pub urls: Vec<String>,

    /// Follow links only to this domain and its subdomains (repeatable; default: the start URLs' hosts).
    #[arg(long = "allow-domain", value_name = "DOMAIN")]
    pub allow_domains: Vec<String>,

    /// Follow only links whose URL matches this regex (repeatable: any may match).
    #[arg(long = "follow", value_name = "REGEX")]
    pub follow: Vec<String>,

    /// Add a field to every item: the trimmed text of the first element the CSS selector matches.
    #[arg(long = "field", value_name = "NAME=CSS")]
    pub fields: Vec<String>,

    /// Append items to FILE: JSON lines (.jsonl), JSON (.json) or CSV (.csv).
    #[arg(
        short = 'o',
        long = "output",
        value_name = "FILE",
        conflicts_with = "overwrite_output"
    )]
    pub output: Option<PathBuf>,

    /// Write items to FILE, replacing what it held.
    #[arg(short = 'O', long = "overwrite-output", value_name = "FILE")]
    pub overwrite_output: Option<PathBuf>,

    /// Keep the crawl as a job in DIR, resumable after any stop (same as -s JOBDIR=DIR).
    #[arg(long = "job", value_name = "DIR")]
    pub job: Option<PathBuf>,

    /// Send this header with every request (repeatable), e.g. -H 'Authorization: Bearer x'.
    /// It overrides a DEFAULT_REQUEST_HEADERS entry of the same name.
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE")]
    pub headers: Vec<String>,

    /// Set a setting, Scrapy style (repeatable), e.g. -s CONCURRENT_REQUESTS=32.
    #[arg(short = 's', long = "set", value_name = "NAME=VALUE")]
    pub settings: Vec<String>,

    /// Read settings from a TOML file; -s values override it.
    #[arg(long = "settings", value_name = "FILE")]
    pub settings_file: Option<PathBuf>,

    /// Connect to ADDR for HOST, like curl's --resolve (repeatable).
    #[arg(long = "resolve", value_name = "HOST:PORT:ADDR")]
    pub resolve: Vec<String>,

    /// Write the final stats as JSON to FILE.
    #[arg(long = "stats", value_name = "FILE")]
    pub stats: Option<PathBuf>,

    /// Write an HTML report to FILE (charts over time, slots, what limited the crawl);
    /// rewritten every 2 s during the crawl.
    #[arg(long = "report", value_name = "FILE.html")]
    pub report: Option<PathBuf>,

    /// Fetch and parse in N worker processes; one scheduler keeps every cap and delay exact.
    #[arg(long = "processes", value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u16).range(1..=256))]
    pub processes: u16,
}
