//! What the engine and its worker processes say to each other over a pipe.
//!
//! Messages are postcard-encoded by spindle-exec's `Connection`. Items travel
//! as JSON text, since postcard cannot carry a self-describing JSON value.

use serde::{Deserialize, Serialize};

use crate::downloader::DownloadError;
use crate::request::Request;
use crate::workers::gates::Ticket;

/// The engine asks a worker to fetch (and, for a 2xx page, parse) one request,
/// carried whole: method, headers (cookies included), body, data and label.
#[derive(Debug, Serialize, Deserialize)]
pub struct Job {
    pub id: u64,
    pub request: Request,
    /// The slot's gate and gap: the worker passes it right before sending.
    pub ticket: Ticket,
}

#[derive(Debug, Serialize, Deserialize)]
pub enum FromWorker {
    /// The download ended. The engine decides retries, redirects and robots from this.
    Fetched { id: u64, outcome: Fetched },
    /// A 2xx page was parsed (sent after `Fetched`, only for pages the worker parses).
    Parsed {
        id: u64,
        result: Result<ParsedPage, String>,
    },
}

#[derive(Debug, Serialize, Deserialize)]
pub enum Fetched {
    Response {
        status: u16,
        /// Every response header, repeats kept (`Set-Cookie` feeds the engine's cookie jars).
        headers: Vec<(String, Vec<u8>)>,
        /// The body, only for robots.txt; pages are parsed where they were fetched.
        body: Vec<u8>,
        body_len: u64,
        latency_us: u64,
        /// Until the response headers arrived (AutoThrottle's latency).
        headers_latency_us: u64,
        /// Whether a `Parsed` message follows.
        parsed_by_worker: bool,
    },
    Failed(DownloadError),
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ParsedPage {
    /// Each item as JSON text.
    pub items: Vec<String>,
    pub requests: Vec<Request>,
    pub stats: Vec<(String, u64)>,
}

/// Per-worker counters in shared memory, one row of `COUNTERS` u64s per worker incarnation.
pub const COUNTERS: usize = 5;
pub const C_REQUESTS: usize = 0;
pub const C_RESPONSES: usize = 1;
pub const C_BYTES: usize = 2;
pub const C_ITEMS: usize = 3;
/// The job being parsed right now, plus one (0: none). If the worker dies,
/// this names the page that killed it, so only that page is charged.
pub const C_PARSING: usize = 4;
/// Rows of counters: worker incarnations beyond this share the last row.
pub const MAX_ROWS: usize = 1024;
