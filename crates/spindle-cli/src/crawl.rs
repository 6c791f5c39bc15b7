//! `spindle crawl`: checks every argument before anything is fetched, then runs the crawl.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use spindle::exporter::{Format, OpenMode};
use spindle::{Crawler, Request, Settings};

use crate::args::{CrawlArgs, ExtractArgs};
use crate::progress;
use crate::spider::{check_domain, FieldSpec, FollowSpider, SpiderConfig};
use crate::Failure;

/// Where each setting's value came from, for `spindle settings`.
pub type Sources = HashMap<String, String>;

/// The command line's settings: spindle's command-line defaults, then the TOML file, then each
/// `-s`, checked. Also says where each value that is not the library default came from.
pub fn load_settings(
    file: Option<&Path>,
    assignments: &[String],
) -> anyhow::Result<(Settings, Sources)> {
    // The command line obeys robots.txt unless told not to (the library, like Scrapy, does not).
    let mut settings = Settings::default().with("ROBOTSTXT_OBEY", "true")?;
    let mut sources = Sources::new();
    sources.insert("ROBOTSTXT_OBEY".into(), "command-line default".into());
    if let Some(path) = file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read settings file {}", path.display()))?;
        settings
            .apply_toml(&text)
            .with_context(|| format!("settings file {}", path.display()))?;
        for name in spindle::SETTING_NAMES {
            let keyed = text.lines().any(|line| {
                let line = line
                    .trim_start()
                    .trim_start_matches('[')
                    .trim_start_matches('"');
                line.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with([' ', '=', '.', ']', '"', '\t']))
            });
            if keyed {
                sources.insert(
                    name.to_string(),
                    format!("settings file {}", path.display()),
                );
            }
        }
    }
    for assignment in assignments {
        settings.set_assignment(assignment)?;
        if let Some((name, _)) = assignment.split_once('=') {
            sources.insert(name.trim().to_string(), format!("-s {}", assignment.trim()));
        }
    }
    Ok((settings, sources))
}

/// `-H 'Name: value'` arguments, added to the default headers.
pub fn add_headers(settings: &mut Settings, headers: &[String]) -> anyhow::Result<()> {
    for header in headers {
        let Some((name, value)) = header.split_once(':') else {
            bail!("-H `{header}` is not `Name: value` (for example -H 'Accept-Language: fr')");
        };
        settings
            .add_default_header(name, value)
            .with_context(|| format!("-H `{header}`"))?;
    }
    Ok(())
}

/// `--field` and `--field-all`, checked for names; returns them and the item's column names.
pub fn field_specs(extract: &ExtractArgs) -> anyhow::Result<(Vec<FieldSpec>, Vec<String>)> {
    let mut fields = Vec::new();
    let mut field_names = vec!["url".to_string(), "status".to_string(), "depth".to_string()];
    let given = extract
        .fields
        .iter()
        .map(|f| (f, false))
        .chain(extract.fields_all.iter().map(|f| (f, true)));
    for (field, all) in given {
        let flag = if all { "--field-all" } else { "--field" };
        let Some((name, selector)) = field.split_once('=') else {
            bail!("{flag} `{field}` is not NAME=SELECTOR (for example {flag} title=h1::text)");
        };
        let name = name.trim();
        if name.is_empty() || field_names.iter().any(|n| n == name) {
            bail!("{flag} `{field}`: the name must be non-empty and not repeat another field");
        }
        fields.push(FieldSpec {
            name: name.to_string(),
            selector: selector.trim().to_string(),
            all,
        });
        field_names.push(name.to_string());
    }
    Ok((fields, field_names))
}

/// The spider's fields and link rules from the arguments `crawl` and `parse` share, and the
/// item's column names.
pub fn extract_config(extract: &ExtractArgs) -> anyhow::Result<(SpiderConfig, Vec<String>)> {
    let (fields, field_names) = field_specs(extract)?;
    let config = SpiderConfig {
        follow: extract.follow.clone(),
        no_follow: extract.no_follow,
        deny: extract.deny.clone(),
        deny_domains: extract
            .deny_domains
            .iter()
            .map(|d| check_domain("--deny-domain", d))
            .collect::<anyhow::Result<_>>()?,
        restrict_css: extract.restrict_css.clone(),
        follow_tags: extract.follow_tags.clone(),
        follow_attrs: extract.follow_attrs.clone(),
        fields,
        ..SpiderConfig::default()
    };
    Ok((config, field_names))
}

/// `--resolve` arguments, checked.
pub fn resolves(entries: &[String]) -> anyhow::Result<HashMap<String, IpAddr>> {
    let mut resolve = HashMap::new();
    for entry in entries {
        let (host, ip) = parse_resolve(entry)?;
        if let Some(old) = resolve.insert(host.clone(), ip) {
            if old != ip {
                bail!("--resolve maps {host} to both {old} and {ip}: spindle resolves per host name, give one address");
            }
        }
    }
    Ok(resolve)
}

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
    /// Whether the crawl keeps a job (JOBDIR, or a distributed job in Redis).
    pub fn has_job(&self) -> bool {
        self.settings.jobdir().is_some() || matches!(self.settings.distributed(), Ok(Some(_)))
    }
}

/// Turns the arguments into a plan, or says what to fix. Fetches nothing.
pub fn plan(args: CrawlArgs) -> anyhow::Result<Plan> {
    let (mut settings, _) = load_settings(args.settings_file.as_deref(), &args.settings)?;
    if let Some(dir) = &args.job {
        settings.set("JOBDIR", &dir.display().to_string())?;
    }
    add_headers(&mut settings, &args.headers)?;
    let distributed = settings.distributed()?.is_some();
    if distributed && args.report.is_some() {
        bail!(
            "--report is not written by a distributed crawl (REDIS_URL) yet: see `spindle job status -s REDIS_URL=... -s JOB_NAME=...`"
        );
    }
    if distributed && args.processes > 1 {
        bail!(
            "--processes cannot be used with REDIS_URL: start more `spindle crawl` workers on the job instead"
        );
    }
    if distributed && (args.output.is_some() || args.overwrite_output.is_some()) {
        bail!(
            "a distributed crawl (REDIS_URL) keeps its items in Redis, committed with their page: \
             drop -o/-O and write them out with `spindle export -s REDIS_URL=... -s JOB_NAME=... -o FILE`"
        );
    }

    let mut hosts = Vec::new();
    let mut sitemaps = Vec::new();
    for url in &args.urls {
        let request =
            Request::get(url).context("bad start URL: give an absolute http:// or https:// URL")?;
        hosts.extend(request.url.host_str().map(str::to_string));
    }
    for sitemap in &args.sitemaps {
        if sitemap == "robots" {
            if args.urls.is_empty() {
                bail!("--sitemap robots reads the start URLs' robots.txt: give a start URL too");
            }
            for url in &args.urls {
                let url = Request::get(url)?.url;
                sitemaps.push(url.join("/robots.txt")?.to_string());
            }
        } else {
            let request = Request::get(sitemap).with_context(|| {
                format!("bad --sitemap `{sitemap}`: give an absolute http:// or https:// URL, or `robots`")
            })?;
            hosts.extend(request.url.host_str().map(str::to_string));
            sitemaps.push(sitemap.clone());
        }
    }
    sitemaps.dedup();
    let allowed_domains = if args.allow_domains.is_empty() {
        hosts
    } else {
        args.allow_domains
            .iter()
            .map(|d| check_domain("--allow-domain", d))
            .collect::<anyhow::Result<_>>()?
    };
    let (config, field_names) = extract_config(&args.extract)?;
    let spider = FollowSpider::new(SpiderConfig {
        start_urls: args.urls.clone(),
        allowed_domains,
        sitemaps,
        sitemap_follow: args.sitemap_follow.clone(),
        sitemap_since: args.sitemap_since.clone(),
        ..config
    })?;

    // Scrapy's -o appends and -O overwrites.
    let output = match (args.output, args.overwrite_output) {
        (Some(path), _) => Some((path, OpenMode::Append)),
        (None, Some(path)) => Some((path, OpenMode::Overwrite)),
        (None, None) => None,
    };
    let output = match output {
        None => None,
        Some((path, mode)) if path == Path::new("-") => {
            if settings.jobdir().is_some() {
                bail!("-o - (stdout) cannot be resumed with a job: give -o FILE with --job");
            }
            Some((path, Format::JsonLines, field_names, mode))
        }
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

    let resolve = resolves(&args.resolve)?;

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
    let has_job = plan.has_job();
    let mut crawler = Crawler::multiprocess(plan.spider, plan.settings, plan.processes)
        .map_err(|e| Failure::Runtime(e.into()))?;
    for (host, ip) in plan.resolve {
        crawler = crawler.resolve(&host, ip);
    }
    if let Some(path) = plan.report {
        crawler = crawler.report(path);
    }
    if let Some((path, format, fields, mode)) = plan.output {
        if path == Path::new("-") {
            crawler = crawler.exporter(spindle::exporter::stdout_json_lines());
        } else {
            crawler = crawler.output_file(path, format, Some(fields), mode);
        }
    }

    let shutdown = crawler.shutdown_handle();
    tokio::spawn(async move {
        if let Some(first) = stop_signal().await {
            tracing::warn!("{first}: stopping gracefully; press Ctrl-C (or send SIGTERM) again to stop at once");
            shutdown.shutdown();
            if stop_signal().await.is_some() {
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
    let pages = report
        .get("response_received_count")
        .saturating_sub(report.get("robotstxt/response_count"));
    // A resumed job that was already done fetches nothing, rightly.
    let no_page = pages == 0 && report.finish_reason == "finished" && !has_job;
    if let Some(path) = plan.stats {
        std::fs::write(&path, report.to_json())
            .with_context(|| format!("cannot write stats to {}", path.display()))
            .map_err(Failure::Runtime)?;
    }
    if let Some(error) = &report.output_error {
        // The stats are out; the output ends on a whole record.
        return Err(Failure::Runtime(anyhow::anyhow!(
            "{error}; the crawl stopped there"
        )));
    }
    if report.finish_reason == "memusage_exceeded" {
        return Err(Failure::Runtime(anyhow::anyhow!(
            "the crawl used more memory than MEMUSAGE_LIMIT_MB allows and was closed (finish_reason: memusage_exceeded)"
        )));
    }
    if no_page {
        let why = if report.get("robotstxt/forbidden") > 0 {
            "robots.txt forbids it (-s ROBOTSTXT_OBEY=false crawls anyway)"
        } else {
            "nothing answered (see the warnings above and downloader/exception_type_count \
             in the stats)"
        };
        return Err(Failure::Runtime(anyhow::anyhow!(
            "no start URL could be fetched: {why}"
        )));
    }
    Ok(())
}

/// The first Ctrl-C (SIGINT) or SIGTERM, named; `None` if signals cannot be watched.
pub async fn stop_signal() -> Option<&'static str> {
    let mut term =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok()?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.ok().map(|_| "Ctrl-C"),
        _ = term.recv() => Some("SIGTERM"),
    }
}
