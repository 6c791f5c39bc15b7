//! The `spindle` binary: a thin layer over the `spindle` library.

mod args;
#[cfg(feature = "bench")]
mod bench;
mod crawl;
mod job;
mod progress;
mod spider;

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use args::{Cli, Command};

/// With a job, memory must stay flat while millions of requests pass
/// between threads (admitted on the engine's, freed on the store's). glibc
/// gives each thread an arena of its own, and the freed space stays spread
/// over them: capping them at two cut RSS by a third at 3.7 million queued
/// URLs (docs/benchmarks.md). Called before any thread starts.
pub fn fewer_malloc_arenas() {
    // SAFETY: mallopt only sets an allocator parameter; no thread runs yet.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
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
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| EnvFilter::new("info,fjall=warn,lsm_tree=warn")),
        )
        .with_writer(progress::LogWriter(bar.clone()))
        .with_target(false)
        .init();

    let result = match cli.command {
        Command::Crawl(args) => match crawl::plan(*args) {
            Err(e) => Err(Failure::Usage(e)),
            Ok(plan) => {
                if plan.has_job() {
                    fewer_malloc_arenas();
                }
                tokio::runtime::Builder::new_multi_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| Failure::Runtime(e.into()))
                    .and_then(|rt| rt.block_on(crawl::run(plan, bar)))
            }
        },
        #[cfg(feature = "bench")]
        Command::Bench(args) => bench::run(args),
        Command::Job(args::JobCommand::Status { dir, json }) => job::status(&dir, json),
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
