//! spindle: a web-crawling engine with Scrapy's concurrency model, exact and measured.
//!
//! The parts carry the names Scrapy users know. Inside (private modules):
//! the `scheduler` (a frontier of one priority queue per download slot, and
//! the duplicate filter), the `downloader` (HTTP, DNS, and the slots that
//! carry per-site politeness), `robots` and `retry`, and the `engine` whose
//! event loop joins them. Outside, what a spider author uses:
//! - [`Settings`]: `CONCURRENT_REQUESTS`, `CONCURRENT_REQUESTS_PER_DOMAIN`,
//!   `CONCURRENT_REQUESTS_PER_IP`, `DOWNLOAD_DELAY` and the rest, with Scrapy's defaults;
//! - [`Request`] and [`Response`]: method, headers, body, data and callback
//!   label; text, JSON and `follow`;
//! - the [`Spider`] trait, and [`Crawler`] to run one;
//! - [`middleware`]: hooks around the downloader (default headers and cookies are built on them);
//! - [`pipeline`]: stages every item passes before it is exported;
//! - [`linkextractor`]: streaming link and field extraction;
//! - [`exporter`]: JSON lines, JSON and CSV item exporters;
//! - [`CrawlReport`]: Scrapy's stat names plus per-slot figures.
//!
//! ```no_run
//! use spindle::{Crawler, Output, Request, Response, Settings, Spider, SpiderError};
//!
//! struct Titles;
//! impl Spider for Titles {
//!     fn start_requests(&self) -> Vec<Request> {
//!         vec![Request::get("http://example.com/").unwrap()]
//!     }
//!     fn parse(&self, response: &Response) -> Result<Output, SpiderError> {
//!         Ok(Output::default())
//!     }
//! }
//! # async fn run() {
//! let report = Crawler::new(Titles, Settings::default()).run().await.unwrap();
//! println!("{}", report.summary());
//! # }
//! ```

#![warn(missing_docs)]

pub mod distributed;
mod downloader;
mod engine;
pub mod exporter;
mod item;
pub mod linkextractor;
pub mod middleware;
mod offsite;
pub mod pipeline;
mod report;
mod request;
mod response;
mod retry;
mod robots;
mod scheduler;
pub mod selector;
mod settings;
mod spider;
mod stats;
mod throttle;
mod workers;

/// Jobs (`JOBDIR`): the store that keeps a crawl's frontier, seen set and
/// progress across runs, behind one interface with several homes.
pub mod job {
    pub use crate::scheduler::disk::DiskStore;
    pub use crate::scheduler::store::{
        Commit, FrontierStore, JobState, MemoryStore, Pending, StoreError,
    };
}

pub use downloader::DownloadError;
pub use engine::{CrawlError, Crawler, ShutdownHandle};
pub use http::header::{HeaderMap, HeaderName, HeaderValue};
pub use http::Method;
pub use item::Item;
pub use linkextractor::{Extracted, LinkExtractor};
pub use middleware::DownloaderMiddleware;
pub use pipeline::{DedupPipeline, ItemPipeline, PipelineError};
pub use request::{check_crawlable, parse_header, InvalidUrl, Request, RequestError};
pub use response::{Response, Selection};
pub use scheduler::{canonicalize_url, fingerprint, DupeFilter};
pub use selector::{Document, Selector, SelectorError};
pub use settings::{
    Settings, SettingsError, SlotOverride, ThrottleMode, MAX_SECONDS, SETTING_NAMES,
};
pub use spider::{Output, Spider, SpiderError};
pub use stats::{CrawlReport, Progress, SlotStats, SlotTotals, WorkerReport};
