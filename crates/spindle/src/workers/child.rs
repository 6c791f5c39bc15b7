//! The worker process: fetches and parses what the engine sends it, many
//! jobs at once, and reports back over its pipe.
//!
//! Politeness is not decided here: a job arrives only when the engine's
//! scheduler has let it start, so the caps and delays hold across processes.

use std::collections::HashMap;
use std::net::IpAddr;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use spindle_exec::{Connection, SharedArray};

use super::gates::SharedGates;
use super::protocol::*;
use crate::downloader::dns::Resolver;
use crate::downloader::slot::Pacing;
use crate::downloader::Downloader;
use crate::response::Response;
use crate::settings::Settings;
use crate::spider::Spider;

/// Set to the end of a URL to make a worker abort (SIGABRT) while parsing any
/// page whose URL ends with it: fault injection for crash tests.
#[cfg(feature = "fault-injection")]
pub const FAULT_ABORT_ENV: &str = "SPINDLE_FAULT_ABORT_ON";

#[derive(Serialize, Deserialize)]
pub struct WorkerArgs {
    pub spider_json: String,
    pub settings: Settings,
    pub resolve: HashMap<String, IpAddr>,
    /// Jobs arrive here; end-of-file means the engine is done with this worker.
    pub jobs: Connection,
    /// Results go back here; when this process dies, the engine sees end-of-file.
    pub results: Connection,
    pub counters: SharedArray<AtomicU64>,
    /// Every slot's send gate, shared with the engine and the other workers.
    pub gates: SharedGates,
    pub row: usize,
}

/// The worker's `main`. Exits when the engine closes its end of the pipe.
pub fn worker_main<S: Spider + DeserializeOwned>(args: WorkerArgs) {
    // Ctrl-C reaches the whole process group; only the engine decides how to stop.
    // SAFETY: setting a signal disposition to SIG_IGN has no preconditions.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_IGN);
    }
    let spider: Arc<S> = Arc::new(
        serde_json::from_str(&args.spider_json).expect("the engine serialized this spider"),
    );
    let settings = Arc::new(args.settings);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("worker runtime");
    crate::downloader::fdlimit::raise_nofile_limit();
    let resolver = {
        let _guard = runtime.enter();
        Arc::new(Resolver::new(args.resolve, &settings))
    };
    let downloader = {
        let _guard = runtime.enter();
        Arc::new(Downloader::new(settings, resolver))
    };
    let counters = Counters {
        shm: args.counters,
        row: args.row.min(MAX_ROWS - 1),
    };

    // One thread writes replies, so tasks never block on the pipe.
    let (replies, outbox) = mpsc::channel::<FromWorker>();
    let results = args.results;
    let writer = std::thread::spawn(move || {
        while let Ok(msg) = outbox.recv() {
            if results.send(&msg).is_err() {
                break;
            }
        }
    });

    // One parse at a time per worker: parsing is CPU work, spread across the
    // worker processes, and a crash during it names exactly one page.
    let (parses, parse_queue) = mpsc::channel::<(u64, Response)>();
    let parser = {
        let replies = replies.clone();
        let counters = counters.clone();
        std::thread::spawn(move || {
            while let Ok((id, response)) = parse_queue.recv() {
                counters.set(C_PARSING, id + 1);
                let result = parse(spider.as_ref(), &response, &counters);
                counters.set(C_PARSING, 0);
                let _ = replies.send(FromWorker::Parsed { id, result });
            }
        })
    };

    let gates = args.gates;
    while let Ok(job) = args.jobs.recv::<Job>() {
        let downloader = downloader.clone();
        let replies = replies.clone();
        let parses = parses.clone();
        let counters = counters.clone();
        let pacing = gates.pacing(&job.ticket);
        runtime.spawn(async move {
            // The slot's spacing holds at this worker's socket, across all workers.
            run_job(job, pacing, &downloader, &replies, &parses, &counters).await;
        });
    }
    // The engine closed the pipe: the crawl is over (or this worker is no longer wanted).
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    drop(parses);
    let _ = parser.join();
    drop(replies);
    let _ = writer.join();
    std::process::exit(0);
}

#[derive(Clone)]
struct Counters {
    shm: SharedArray<AtomicU64>,
    row: usize,
}

impl Counters {
    fn add(&self, which: usize, n: u64) {
        self.shm[self.row * COUNTERS + which].fetch_add(n, Ordering::Relaxed);
    }

    fn set(&self, which: usize, v: u64) {
        self.shm[self.row * COUNTERS + which].store(v, Ordering::SeqCst);
    }
}

async fn run_job(
    job: Job,
    pacing: Pacing,
    downloader: &Downloader,
    replies: &mpsc::Sender<FromWorker>,
    parses: &mpsc::Sender<(u64, Response)>,
    counters: &Counters,
) {
    let robots = job.request.is_robots();
    counters.add(C_REQUESTS, 1);
    let response = match downloader.fetch(job.request, Some(pacing)).await {
        Ok(r) => r,
        Err((_, error)) => {
            let _ = replies.send(FromWorker::Fetched {
                id: job.id,
                outcome: Fetched::Failed(error),
            });
            return;
        }
    };
    counters.add(C_RESPONSES, 1);
    counters.add(C_BYTES, response.body.len() as u64);
    let parse = !robots && (200..300).contains(&response.status);
    let headers = response
        .headers
        .iter()
        .map(|(name, value)| (name.as_str().to_string(), value.as_bytes().to_vec()))
        .collect();
    let _ = replies.send(FromWorker::Fetched {
        id: job.id,
        outcome: Fetched::Response {
            status: response.status,
            headers,
            body: if robots {
                response.body.to_vec()
            } else {
                Vec::new()
            },
            body_len: response.body.len() as u64,
            latency_us: response.latency.as_micros() as u64,
            headers_latency_us: response.headers_latency.as_micros() as u64,
            parsed_by_worker: parse,
        },
    });
    if parse {
        let _ = parses.send((job.id, response));
    }
}

fn parse<S: Spider>(
    spider: &S,
    response: &Response,
    counters: &Counters,
) -> Result<ParsedPage, String> {
    #[cfg(feature = "fault-injection")]
    if let Ok(needle) = std::env::var(FAULT_ABORT_ENV) {
        if !needle.is_empty() && response.url.as_str().ends_with(&needle) {
            std::process::abort();
        }
    }
    match std::panic::catch_unwind(AssertUnwindSafe(|| spider.parse(response))) {
        Ok(Ok(output)) => {
            counters.add(C_ITEMS, output.items.len() as u64);
            Ok(ParsedPage {
                items: output
                    .items
                    .iter()
                    .map(|i| serde_json::to_string(i).expect("items serialize"))
                    .collect(),
                requests: output.requests,
                stats: output
                    .stats
                    .into_iter()
                    .map(|(k, n)| (k.to_string(), n))
                    .collect(),
            })
        }
        Ok(Err(e)) => Err(format!("{e} on {}", response.url)),
        Err(panic) => Err(format!(
            "parse panicked on {}: {}",
            response.url,
            crate::engine::panic_message(&panic)
        )),
    }
}
