//! `spindle crawl`: checks every argument before anything is fetched, then runs the crawl.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::{bail, Context};
use spindle::exporter::{Format, OpenMode};
use spindle::{Crawler, Request, Settings};

use crate::args::CrawlArgs;
use crate::progress;
use crate::spider::FollowSpider;
use crate::Failure;

/// Everything a crawl needs, checked.
pub struct Plan {
    spider: FollowSpider,
    settings: Settings,
    resolve: HashMap<String, IpAddr>,
    output: Option<(PathBuf, Format, Vec<String>, OpenMode)>,
    stats: Option<PathBuf>,
    report: Option<PathBuf>,
    processes: usize,
}

impl Plan {
    /// Whether the crawl keeps a job (JOBDIR).
    pub fn has_job(&self) -> bool {
        self.settings.jobdir().is_some()
    }
}

/// Turns the arguments into a plan, or says what to fix. Fetches nothing.
pub fn plan(args: CrawlArgs) -> anyhow::Result<Plan> {
    // The command line obeys robots.txt unless told not to (the library, like Scrapy, does not).
    let mut settings = Settings::default().with("ROBOTSTXT_OBEY", "true")?;
    if let Some(path) = &args.settings_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read settings file {}", path.display()))?;
        settings
            .apply_toml(&text)
            .with_context(|| format!("in settings file {}", path.display()))?;
    }
    for assignment in &args.settings {
        settings.set_assignment(assignment)?;
    }
    if let Some(dir) = &args.job {
        settings.set("JOBDIR", &dir.display().to_string())?;
    }

    for header in &args.headers {
        let Some((name, value)) = header.split_once(':') else {
            bail!("-H `{header}` is not `Name: value` (for example -H 'Accept-Language: fr')");
        };
        settings
            .add_default_header(name, value)
            .with_context(|| format!("-H `{header}`"))?;
    }

    let mut hosts = Vec::new();
    for url in &args.urls {
        let request =
            Request::get(url).context("bad start URL: give an absolute http:// or https:// URL")?;
        hosts.extend(request.url.host_str().map(str::to_string));
    }
    let allowed_domains = if args.allow_domains.is_empty() {
        hosts
    } else {
        args.allow_domains.clone()
    };

    let mut fields = Vec::new();
    let mut field_names = vec!["url".to_string(), "status".to_string(), "depth".to_string()];
    for field in &args.fields {
        let Some((name, css)) = field.split_once('=') else {
            bail!("--field `{field}` is not NAME=CSS (for example --field title=title)");
        };
        let name = name.trim();
        if name.is_empty() || field_names.iter().any(|n| n == name) {
            bail!("--field `{field}`: the name must be non-empty and not repeat another field");
        }
        fields.push((name.to_string(), css.trim().to_string()));
        field_names.push(name.to_string());
    }
    let spider = FollowSpider::new(
        args.urls.clone(),
        allowed_domains,
        args.follow.clone(),
        fields,
    )?;

    // Scrapy's -o appends and -O overwrites.
    let output = match (args.output, args.overwrite_output) {
        (Some(path), _) => Some((path, OpenMode::Append)),
        (None, Some(path)) => Some((path, OpenMode::Overwrite)),
        (None, None) => None,
    };
    let output = match output {
        None => None,
        Some((path, mode)) => {
            let Some(format) = Format::from_path(&path) else {
                bail!(
                    "cannot tell the output format of {}: name it .jsonl, .json or .csv",
                    path.display()
                );
            };
            Some((path, format, field_names, mode))
        }
    };
    if let Some(stats) = &args.stats {
        check_stats_path(stats, output.as_ref().map(|o| o.0.as_path()))?;
    }

    let mut resolve = HashMap::new();
    for entry in &args.resolve {
        let (host, ip) = parse_resolve(entry)?;
        if let Some(old) = resolve.insert(host.clone(), ip) {
            if old != ip {
                bail!("--resolve maps {host} to both {old} and {ip}: spindle resolves per host name, give one address");
            }
        }
    }

    if let Some(path) = &args.report {
        // Fail now, not after the crawl, when the report cannot be written.
        std::fs::write(
            path,
            "<!DOCTYPE html><title>spindle crawl report</title><p>The crawl is starting.</p>\n",
        )
        .with_context(|| format!("cannot write the report {}", path.display()))?;
    }

    Ok(Plan {
        spider,
        settings,
        resolve,
        output,
        stats: args.stats,
        report: args.report,
        processes: usize::from(args.processes),
    })
}

/// Refuses a `--stats` path that would overwrite the items, or that cannot
/// be written, before anything is fetched rather than after the crawl.
fn check_stats_path(
    stats: &std::path::Path,
    output: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    if let Some(output) = output {
        if same_file(stats, output) {
            bail!(
                "--stats {} is the items output too: the stats would overwrite the items; give it another path",
                stats.display()
            );
        }
    }
    let existed = stats.exists();
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(stats)
        .with_context(|| format!("--stats {} cannot be written", stats.display()))?;
    if !existed {
        let _ = std::fs::remove_file(stats);
    }
    Ok(())
}

/// Whether two paths name one file, whether or not it exists yet.
fn same_file(a: &std::path::Path, b: &std::path::Path) -> bool {
    let resolve = |p: &std::path::Path| {
        let name = p.file_name().map(|n| n.to_os_string());
        let parent = match p.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        (parent.canonicalize().unwrap_or(parent), name)
    };
    resolve(a) == resolve(b)
}

/// `HOST:PORT:ADDR`, as curl takes it. The port is checked but every port of the host is mapped.
fn parse_resolve(entry: &str) -> anyhow::Result<(String, IpAddr)> {
    let mut parts = entry.splitn(3, ':');
    let (Some(host), Some(port), Some(addr)) = (parts.next(), parts.next(), parts.next()) else {
        bail!("--resolve `{entry}` is not HOST:PORT:ADDR (for example example.com:80:127.0.0.1)");
    };
    if host.is_empty() {
        bail!("--resolve `{entry}`: the host is empty");
    }
    port.parse::<u16>()
        .with_context(|| format!("--resolve `{entry}`: `{port}` is not a port number"))?;
    let ip = addr
        .trim_matches(['[', ']'])
        .parse::<IpAddr>()
        .with_context(|| format!("--resolve `{entry}`: `{addr}` is not an IP address"))?;
    Ok((host.to_ascii_lowercase(), ip))
}

/// Runs a checked plan to the end: the crawl, the output file, the stats.
pub async fn run(plan: Plan, bar: Option<indicatif::ProgressBar>) -> Result<(), Failure> {
    let mut crawler = Crawler::multiprocess(plan.spider, plan.settings, plan.processes)
        .map_err(|e| Failure::Runtime(e.into()))?;
    for (host, ip) in plan.resolve {
        crawler = crawler.resolve(&host, ip);
    }
    if let Some(path) = plan.report {
        crawler = crawler.report(path);
    }
    if let Some((path, format, fields, mode)) = plan.output {
        crawler = crawler.output_file(path, format, Some(fields), mode);
    }

    let shutdown = crawler.shutdown_handle();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            tracing::warn!("Ctrl-C: stopping gracefully; press it again to stop at once");
            shutdown.shutdown();
            if tokio::signal::ctrl_c().await.is_ok() {
                // Exit between two batches of items, never inside one, so the
                // output file ends on a whole record.
                let _between_batches = spindle::exporter::lock_writes();
                eprintln!("second Ctrl-C: stopping now");
                std::process::exit(130);
            }
        }
    });
    let progress_task = bar
        .clone()
        .map(|bar| tokio::spawn(progress::drive(bar, crawler.progress())));

    let report = crawler.run().await.map_err(|e| Failure::Runtime(e.into()));
    if let Some(task) = progress_task {
        task.abort();
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let report = report?;
    eprint!("{}", report.summary());
    if let Some(path) = plan.stats {
        std::fs::write(&path, report.to_json())
            .with_context(|| format!("cannot write stats to {}", path.display()))
            .map_err(Failure::Runtime)?;
    }
    match &report.output_error {
        // The stats are out; the output ends on a whole record.
        Some(error) => Err(Failure::Runtime(anyhow::anyhow!(
            "{error}; the crawl stopped there"
        ))),
        None if report.finish_reason == "memusage_exceeded" => Err(Failure::Runtime(anyhow::anyhow!(
            "the crawl used more memory than MEMUSAGE_LIMIT_MB allows and was closed (finish_reason: memusage_exceeded)"
        ))),
        None => Ok(()),
    }
}
