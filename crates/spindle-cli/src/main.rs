//! The `spindle` binary: a thin layer over the `spindle` library.

mod args;
#[cfg(feature = "bench")]
mod bench;
mod crawl;
mod distributed;
mod job;
mod progress;
mod sitemap;
mod spider;
mod tools;

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::Parser;
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::EnvFilter;

use args::{Cli, Command, LogArgs};

/// Sets glibc's allocator up for long crawls. Called before any thread starts.
///
/// - Two arenas, not up to eight per core: with a job, millions of requests
///   pass between threads (admitted on the engine's, freed on the store's),
///   and the freed space stays spread over the arenas. Capping them at two
///   cut RSS by a third at 3.7 million queued URLs, and halved what a broad
///   crawl keeps per known host (3.2 to 1.6 KB at 100,000 hosts). It costs
///   some CPU where threads wait on each other's arena (6–17% on the Rust
///   docs, within the noise of that benchmark): docs/benchmarks.md.
/// - A fixed mmap threshold of 4 MiB: glibc raises it after each large block
///   is freed, up to 32 MB, so the tables a broad crawl grows (slots,
///   robots.txt) end up in the heap, where the holes they leave when they
///   grow are never given back. Fixed, such blocks are mapped on their own
///   and returned whole. At 1 MiB, the bodies of large pages were mapped and
///   unmapped each time, which cost the Rust docs crawl about 0.15 s of
///   system time; few pages pass 4 MiB.
pub fn tune_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; no thread runs yet.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
    }
}

/// How a run failed: bad usage (exit 2, nothing fetched) or trouble while crawling (exit 1).
pub enum Failure {
    Usage(anyhow::Error),
    Runtime(anyhow::Error),
}

fn main() -> ExitCode {
    // Worker processes of `--processes N` are this binary run again: this
    // runs the worker and never returns there, and returns at once here.
    spindle_exec::init();
    // A file-size limit (RLIMIT_FSIZE) must fail the write, as a full disk
    // does, not kill the process before it can cut the output back and print its stats.
    // SAFETY: setting a signal's disposition to SIG_IGN has no preconditions.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
    let cli = Cli::parse();
    let bar = progress::bar_if_terminal();
    if let Err(e) = init_logs(&cli.log, bar.clone()) {
        eprintln!("error: {e:#}");
        return ExitCode::from(2);
    }

    let result = match cli.command {
        Command::Crawl(args) => match crawl::plan(*args) {
            Err(e) => Err(Failure::Usage(e)),
            Ok(plan) => {
                tune_malloc();
                tokio::runtime::Builder::new_multi_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| Failure::Runtime(e.into()))
                    .and_then(|rt| rt.block_on(crawl::run(plan, bar)))
            }
        },
        #[cfg(feature = "bench")]
        Command::Bench(args) => bench::run(args),
        Command::Job(args::JobCommand::Status {
            dir: Some(dir),
            settings,
            json,
        }) if settings.is_empty() => job::status(&dir, json),
        Command::Job(args::JobCommand::Status {
            dir: None,
            settings,
            json,
        }) => distributed::status(&settings, json),
        Command::Job(args::JobCommand::Status { .. }) => Err(Failure::Usage(anyhow::anyhow!(
            "give a job directory or -s REDIS_URL=... -s JOB_NAME=..., not both"
        ))),
        Command::Export(args) => distributed::export(&args),
        Command::Fetch(args) => tools::fetch(args),
        Command::Parse(args) => tools::parse(args),
        Command::Settings(args) => tools::settings(args),
        Command::Shell(args) => tools::shell(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(e)) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
        Err(Failure::Runtime(e)) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// The job store's own logs (fjall and its LSM tree) are its business, not the crawl's.
const QUIET_STORE: &str = "fjall=warn,lsm_tree=warn";

/// Logs to stderr (above the progress line) or to `--logfile`, at `-L`'s level, `RUST_LOG`'s,
/// or INFO; none with `--nolog`. Colour only on a terminal and without `NO_COLOR`.
fn init_logs(log: &LogArgs, bar: Option<indicatif::ProgressBar>) -> anyhow::Result<()> {
    let filter = if log.nolog {
        EnvFilter::new("off")
    } else if let Some(level) = &log.level {
        let level = match level.to_ascii_uppercase().as_str() {
            "CRITICAL" | "ERROR" => "error",
            "WARNING" | "WARN" => "warn",
            "INFO" => "info",
            "DEBUG" => "debug",
            "TRACE" => "trace",
            _ => bail!("-L `{level}` is not a log level: give ERROR, WARNING, INFO or DEBUG"),
        };
        EnvFilter::new(format!("{level},{QUIET_STORE}"))
    } else {
        EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| EnvFilter::new(format!("info,{QUIET_STORE}")))
    };
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    let (writer, ansi) = match &log.logfile {
        Some(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("cannot open log file {}", path.display()))?;
            (BoxMakeWriter::new(std::sync::Mutex::new(file)), false)
        }
        None => (
            BoxMakeWriter::new(progress::LogWriter(bar)),
            std::io::stderr().is_terminal() && !no_color,
        ),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(ansi)
        .with_target(false)
        .init();
    Ok(())
}
