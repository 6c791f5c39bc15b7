//! The tools beside `crawl`, as Scrapy's: `fetch` (one URL, as the crawler downloads it),
//! `parse` (one page's item and links, without crawling) and `settings` (the effective
//! settings and where each came from).

use std::io::Write;
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, Context as _};
use spindle::middleware::{Action, Context};
use spindle::{
    CrawlReport, Crawler, DownloaderMiddleware, Output, Request, Response, Spider, SpiderError,
};

use crate::args::{ConfigArgs, FetchArgs, ParseArgs, SettingsArgs, ShellArgs};
use crate::crawl::{add_headers, extract_config, load_settings, resolves};
use crate::spider::{check_domain, in_domains, FollowSpider, SpiderConfig};
use crate::Failure;

/// The label of the one request `fetch` and `parse` make.
const LABEL: &str = "spindle-fetch";

/// Keeps the last response to the one request (after redirects and retries, the final one).
struct Capture(Arc<Mutex<Option<Response>>>);

impl DownloaderMiddleware for Capture {
    fn process_response(&mut self, response: &mut Response, _: &mut Context<'_>) -> Action {
        if response.request.callback.as_deref() == Some(LABEL) {
            *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(response.clone());
        }
        Action::Continue
    }
}

/// A spider of one request that parses nothing.
struct One(String);

impl Spider for One {
    fn name(&self) -> &str {
        "fetch"
    }
    fn start_requests(&self) -> Vec<Request> {
        vec![Request::get(&self.0)
            .expect("checked before")
            .with_callback(LABEL)]
    }
    fn parse(&self, _: &Response) -> Result<Output, SpiderError> {
        Ok(Output::default())
    }
}

/// Downloads `url` as a crawl would: with the settings, headers and robots.txt. Returns the
/// final response and the User-Agent it was sent with.
fn fetch_one(url: &str, config: &ConfigArgs) -> Result<(Response, String), Failure> {
    let (mut settings, _) = load_settings(
        config.source.settings_file.as_deref(),
        &config.source.settings,
    )
    .map_err(Failure::Usage)?;
    add_headers(&mut settings, &config.headers).map_err(Failure::Usage)?;
    let resolve = resolves(&config.resolve).map_err(Failure::Usage)?;
    let user_agent = settings.get("USER_AGENT").unwrap_or_default();
    Request::get(url)
        .context("bad URL: give an absolute http:// or https:// URL")
        .map_err(Failure::Usage)?;
    let captured = Arc::new(Mutex::new(None));
    let mut crawler =
        Crawler::new(One(url.to_string()), settings).middleware(Capture(captured.clone()));
    for (host, ip) in resolve {
        crawler = crawler.resolve(&host, ip);
    }
    let report = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Runtime(e.into()))?
        .block_on(crawler.run())
        .map_err(|e| Failure::Runtime(e.into()))?;
    let response = captured.lock().unwrap_or_else(|p| p.into_inner()).take();
    response
        .map(|r| (r, user_agent))
        .ok_or_else(|| Failure::Runtime(why_not(url, &report)))
}

/// Why the one request got no response, from the crawl's counters.
fn why_not(url: &str, report: &CrawlReport) -> anyhow::Error {
    if report.get("robotstxt/forbidden") > 0 {
        return anyhow!("{url}: robots.txt forbids it (-s ROBOTSTXT_OBEY=false fetches it anyway)");
    }
    let errors: Vec<String> = report
        .counters
        .iter()
        .filter_map(|(k, n)| {
            k.strip_prefix("downloader/exception_type_count/")
                .map(|kind| format!("{kind} ×{n}"))
        })
        .collect();
    if errors.is_empty() {
        anyhow!(
            "{url} could not be fetched (finish reason: {})",
            report.finish_reason
        )
    } else {
        anyhow!("{url} could not be fetched: {}", errors.join(", "))
    }
}

/// `spindle fetch URL [--headers]`.
pub fn fetch(args: FetchArgs) -> Result<(), Failure> {
    let (response, user_agent) = fetch_one(&args.url, &args.config)?;
    let mut out = std::io::stdout().lock();
    let written = if args.headers_only {
        let mut text = String::new();
        if !response.request.headers.contains_key("user-agent") {
            text.push_str(&format!("> user-agent: {user_agent}\n"));
        }
        for (name, value) in &response.request.headers {
            text.push_str(&format!(
                "> {name}: {}\n",
                String::from_utf8_lossy(value.as_bytes())
            ));
        }
        text.push_str(&format!("< {} {}\n", response.status, response.url));
        for (name, value) in &response.headers {
            text.push_str(&format!(
                "< {name}: {}\n",
                String::from_utf8_lossy(value.as_bytes())
            ));
        }
        out.write_all(text.as_bytes())
    } else {
        out.write_all(&response.body)
    };
    written
        .and_then(|()| out.flush())
        .context("cannot write to stdout")
        .map_err(Failure::Runtime)?;
    if !(200..300).contains(&response.status) {
        tracing::warn!(status = response.status, url = %response.url, "the server answered with an error status");
    }
    Ok(())
}

/// `spindle parse URL --field ... [--follow ...]`: the item and the links of one page.
pub fn parse(args: ParseArgs) -> Result<(), Failure> {
    let spider = parse_spider(&args).map_err(Failure::Usage)?;
    let (response, _) = fetch_one(&args.url, &args.config)?;
    let page = spider.page(&response);
    let allowed = &spider.config().allowed_domains;
    let mut links: Vec<String> = page
        .links
        .iter()
        .filter(|u| u.host_str().is_some_and(|h| in_domains(h, allowed)))
        .map(|u| u.to_string())
        .collect();
    let mut seen = std::collections::HashSet::new();
    links.retain(|l| seen.insert(l.clone()));
    let item = serde_json::to_string_pretty(&page.item).expect("items are JSON");
    let text = format!(
        "# Scraped Items {}\n{item}\n# Requests ({} links a crawl would follow) {}\n{}",
        "-".repeat(50),
        links.len(),
        "-".repeat(20),
        links.iter().map(|l| format!("{l}\n")).collect::<String>()
    );
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .context("cannot write to stdout")
        .map_err(Failure::Runtime)
}

fn parse_spider(args: &ParseArgs) -> anyhow::Result<FollowSpider> {
    let url =
        Request::get(&args.url).context("bad URL: give an absolute http:// or https:// URL")?;
    let allowed_domains = if args.allow_domains.is_empty() {
        url.url.host_str().map(str::to_string).into_iter().collect()
    } else {
        args.allow_domains
            .iter()
            .map(|d| check_domain("--allow-domain", d))
            .collect::<anyhow::Result<_>>()?
    };
    let (config, _) = extract_config(&args.extract)?;
    FollowSpider::new(SpiderConfig {
        start_urls: vec![args.url.clone()],
        allowed_domains,
        ..config
    })
}

/// `spindle settings [NAME]`: the effective value of each setting and where it came from.
pub fn settings(args: SettingsArgs) -> Result<(), Failure> {
    let (settings, sources) =
        load_settings(args.source.settings_file.as_deref(), &args.source.settings)
            .map_err(Failure::Usage)?;
    let source = |name: &str| {
        sources
            .get(name)
            .cloned()
            .unwrap_or_else(|| "default".to_string())
    };
    let text = match &args.name {
        Some(name) => {
            let Some(value) = settings.get(name) else {
                let err = settings.clone().set(name, "").expect_err("not a setting");
                return Err(Failure::Usage(err.into()));
            };
            eprintln!("{name} from {}", source(name));
            format!("{value}\n")
        }
        None => {
            let width = spindle::SETTING_NAMES
                .iter()
                .map(|n| n.len())
                .max()
                .unwrap_or(0);
            spindle::SETTING_NAMES
                .iter()
                .map(|name| {
                    let value = settings.get(name).unwrap_or_default();
                    format!("{name:width$} = {value}  ({})\n", source(name))
                })
                .collect()
        }
    };
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .context("cannot write to stdout")
        .map_err(Failure::Runtime)
}

/// `spindle shell URL`: fetches the page once, then evaluates each line typed as a selector
/// (CSS with `::text`/`::attr`, or XPath) and prints every match, links made absolute.
/// `fetch URL` loads another page; `quit` or Ctrl-D leaves. History is kept in
/// `~/.spindle_history`.
pub fn shell(args: ShellArgs) -> Result<(), Failure> {
    use rustyline::error::ReadlineError;

    let (mut response, _) = fetch_one(&args.url, &args.config)?;
    let mut editor = rustyline::DefaultEditor::new()
        .context("cannot start the prompt")
        .map_err(Failure::Runtime)?;
    let history = std::env::var_os("HOME")
        .map(|home| std::path::PathBuf::from(home).join(".spindle_history"));
    if let Some(path) = &history {
        let _ = editor.load_history(path);
    }
    println!(
        "{} {} ({} bytes). Type a selector (h1::text, a::attr(href), //title/text()), \
         `fetch URL`, or `quit`.",
        response.status,
        response.url,
        response.body.len()
    );
    let mut doc = spindle::Document::parse(&response.text(), Some(&response.url));
    loop {
        let line = match editor.readline("spindle> ") {
            Ok(line) => line,
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(Failure::Runtime(e.into())),
        };
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let _ = editor.add_history_entry(line);
        if line == "quit" || line == "exit" {
            break;
        }
        if let Some(url) = line.strip_prefix("fetch ") {
            match fetch_one(url.trim(), &args.config) {
                Ok((r, _)) => {
                    response = r;
                    doc = spindle::Document::parse(&response.text(), Some(&response.url));
                    println!(
                        "{} {} ({} bytes)",
                        response.status,
                        response.url,
                        response.body.len()
                    );
                }
                Err(Failure::Usage(e) | Failure::Runtime(e)) => println!("error: {e:#}"),
            }
            continue;
        }
        match spindle::Selector::parse(line) {
            Err(e) => println!("error: {e}"),
            Ok(selector) => {
                let found = selector.absolute(true).getall(&doc);
                if found.is_empty() {
                    println!("(no match)");
                }
                for (i, value) in found.iter().enumerate() {
                    println!("[{i}] {}", serde_json::Value::String(value.clone()));
                }
            }
        }
    }
    if let Some(path) = &history {
        let _ = editor.save_history(path);
    }
    Ok(())
}
