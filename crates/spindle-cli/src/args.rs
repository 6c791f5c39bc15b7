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

    #[command(flatten)]
    pub log: LogArgs,
}

/// Logging, as Scrapy's `-L`, `--nolog` and `LOG_FILE`. Logs always go to stderr (or the file).
#[derive(Args, Debug)]
pub struct LogArgs {
    /// Log level: ERROR, WARNING, INFO or DEBUG (TRACE for everything). Default INFO.
    #[arg(short = 'L', long = "loglevel", value_name = "LEVEL", global = true)]
    pub level: Option<String>,

    /// No log lines at all (the final stats are still printed).
    #[arg(long = "nolog", global = true, conflicts_with = "level")]
    pub nolog: bool,

    /// Write log lines to FILE instead of stderr (appended; no colour codes).
    #[arg(long = "logfile", value_name = "FILE", global = true)]
    pub logfile: Option<PathBuf>,
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
    /// Inspect a job: a job directory (JOBDIR) or a distributed job (-s REDIS_URL=... -s JOB_NAME=...).
    #[command(subcommand)]
    Job(JobCommand),
    /// Write a distributed job's items (kept in Redis) to a file as JSON lines.
    Export(ExportArgs),
    /// Download one URL as the crawler would (settings, robots.txt, headers) and print its body.
    Fetch(FetchArgs),
    /// Fetch one page and print the item and the links a crawl would take from it.
    Parse(ParseArgs),
    /// Print the effective settings and where each value came from.
    Settings(SettingsArgs),
    /// Fetch one page and try selectors on it at a prompt (line editing, history).
    Shell(ShellArgs),
}

#[derive(Args, Debug)]
pub struct ShellArgs {
    /// The page to load.
    #[arg(value_name = "URL")]
    pub url: String,

    #[command(flatten)]
    pub config: ConfigArgs,
}

/// Where settings come from, as `crawl` takes them: `-s` and `--settings`.
#[derive(Args, Debug, Default)]
pub struct SettingsSource {
    /// Set a setting, Scrapy style (repeatable), e.g. -s CONCURRENT_REQUESTS=32.
    #[arg(short = 's', long = "set", value_name = "NAME=VALUE")]
    pub settings: Vec<String>,

    /// Read settings from a TOML file; -s values override it.
    #[arg(long = "settings", value_name = "FILE")]
    pub settings_file: Option<PathBuf>,
}

/// The settings every command that fetches takes.
#[derive(Args, Debug, Default)]
pub struct ConfigArgs {
    #[command(flatten)]
    pub source: SettingsSource,

    /// Send this header with every request (repeatable), e.g. -H 'Authorization: Bearer x'.
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE")]
    pub headers: Vec<String>,

    /// Connect to ADDR for HOST, like curl's --resolve (repeatable).
    #[arg(long = "resolve", value_name = "HOST:PORT:ADDR")]
    pub resolve: Vec<String>,
}

#[derive(Args, Debug)]
pub struct FetchArgs {
    /// The URL to download.
    #[arg(value_name = "URL")]
    pub url: String,

    /// Print the status line and response headers (to stdout) before the body.
    #[arg(long = "headers")]
    pub headers_only: bool,

    #[command(flatten)]
    pub config: ConfigArgs,
}

#[derive(Args, Debug)]
pub struct ParseArgs {
    /// The page to parse.
    #[arg(value_name = "URL")]
    pub url: String,

    #[command(flatten)]
    pub extract: ExtractArgs,

    /// Follow links only to this domain and its subdomains (default: the URL's host).
    #[arg(long = "allow-domain", value_name = "DOMAIN")]
    pub allow_domains: Vec<String>,

    #[command(flatten)]
    pub config: ConfigArgs,
}

#[derive(Args, Debug)]
pub struct SettingsArgs {
    /// Print only this setting's value.
    #[arg(value_name = "NAME")]
    pub name: Option<String>,

    #[command(flatten)]
    pub source: SettingsSource,
}

/// What to take from each page and which links to follow; shared by `crawl` and `parse`.
#[derive(Args, Debug, Default)]
pub struct ExtractArgs {
    /// Follow only links whose URL matches this regex (repeatable: any may match).
    #[arg(long = "follow", value_name = "REGEX")]
    pub follow: Vec<String>,

    /// Take links from this tag (repeatable; default `a` and `area`), as Scrapy's `tags`.
    #[arg(long = "follow-tag", value_name = "TAG")]
    pub follow_tags: Vec<String>,

    /// Take links from this attribute (repeatable; default `href`), as Scrapy's `attrs`.
    #[arg(long = "follow-attr", value_name = "ATTR")]
    pub follow_attrs: Vec<String>,

    /// Follow no links at all: crawl only the start URLs and sitemap entries.
    #[arg(long = "no-follow")]
    pub no_follow: bool,

    /// Do not follow links whose URL matches this regex (repeatable; wins over --follow).
    #[arg(long = "deny", value_name = "REGEX")]
    pub deny: Vec<String>,

    /// Do not follow links to this domain or its subdomains (repeatable).
    #[arg(long = "deny-domain", value_name = "DOMAIN")]
    pub deny_domains: Vec<String>,

    /// Follow only links inside elements this CSS selector matches (repeatable).
    #[arg(long = "restrict-css", value_name = "CSS")]
    pub restrict_css: Vec<String>,

    /// Add a field: the first match of a CSS selector (`h1`: whole text; `h1::text`: own text;
    /// `a::attr(href)`) or of an XPath (`//a/@href`, starting with `/`, `./` or `(`).
    #[arg(long = "field", value_name = "NAME=SELECTOR")]
    pub fields: Vec<String>,

    /// Add a field holding every match, as a JSON array (joined with commas in CSV).
    #[arg(long = "field-all", value_name = "NAME=SELECTOR")]
    pub fields_all: Vec<String>,
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// The job: -s REDIS_URL=redis://HOST:PORT/DB -s JOB_NAME=NAME (required).
    #[arg(short = 's', long = "set", value_name = "NAME=VALUE")]
    pub settings: Vec<String>,
    /// The file to write (overwritten), one item a line (JSON lines).
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: PathBuf,
}

#[derive(Subcommand, Debug)]
pub enum JobCommand {
    /// What a job holds: pages done, queued, seen, per-slot backlog, last commit, finished or not.
    Status {
        /// The job directory (as given to -s JOBDIR=DIR or --job DIR); none for a distributed job.
        #[arg(value_name = "DIR", required_unless_present = "settings")]
        dir: Option<PathBuf>,
        /// A distributed job: -s REDIS_URL=redis://HOST:PORT/DB -s JOB_NAME=NAME.
        #[arg(short = 's', long = "set", value_name = "NAME=VALUE")]
        settings: Vec<String>,
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
    #[arg(required_unless_present = "sitemaps", value_name = "URL")]
    pub urls: Vec<String>,

    /// Follow links only to this domain and its subdomains (repeatable; default: the start URLs' hosts).
    #[arg(long = "allow-domain", value_name = "DOMAIN")]
    pub allow_domains: Vec<String>,

    #[command(flatten)]
    pub extract: ExtractArgs,

    /// Crawl the URLs of this sitemap (repeatable): urlset, sitemap index, gzip; a robots.txt
    /// URL is read for its `Sitemap:` lines, and `robots` reads the start URLs' robots.txt.
    #[arg(long = "sitemap", value_name = "URL|robots")]
    pub sitemaps: Vec<String>,

    /// Follow only the sitemaps of a sitemap index whose URL matches this regex (repeatable).
    #[arg(long = "sitemap-follow", value_name = "REGEX")]
    pub sitemap_follow: Vec<String>,

    /// Crawl only sitemap URLs whose <lastmod> is on or after this date (or that have none).
    #[arg(long = "sitemap-since", value_name = "YYYY-MM-DD")]
    pub sitemap_since: Option<String>,

    /// Append items to FILE: JSON lines (.jsonl), JSON (.json) or CSV (.csv); `-` is JSON
    /// lines on stdout.
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
