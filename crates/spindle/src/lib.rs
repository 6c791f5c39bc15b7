//! spindle: a web-crawling engine with Scrapy's concurrency model, exact and measured.
//!
//! The parts carry the names Scrapy users know:
//! - [`settings`]: `CONCURRENT_REQUESTS`, `CONCURRENT_REQUESTS_PER_DOMAIN`,
//!   `CONCURRENT_REQUESTS_PER_IP`, `DOWNLOAD_DELAY` and the rest, with Scrapy's defaults;
//! - [`scheduler`]: the frontier (a priority queue per download slot) and the duplicate filter;
//! - [`downloader`]: the HTTP client, DNS, and the slots that carry per-site politeness;
//! - [`spider`]: the [`Spider`] trait users implement;
//! - [`linkextractor`]: streaming link and field extraction;
//! - [`exporter`]: JSON lines, JSON and CSV item exporters;
//! - [`robots`] and [`retry`]: robots.txt rules, and retries that back off per slot;
//! - [`stats`]: Scrapy's stat names plus per-slot figures;
//! - [`engine`]: the event loop joining them, run with [`Crawler`].
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

pub mod downloader;
pub mod engine;
pub mod exporter;
pub mod item;
pub mod linkextractor;
pub mod offsite;
pub mod request;
pub mod response;
pub mod retry;
pub mod robots;
pub mod scheduler;
pub mod selector;
pub mod settings;
pub mod spider;
pub mod stats;
pub mod workers;

pub use engine::{CrawlError, Crawler, ShutdownHandle};
pub use item::Item;
pub use linkextractor::{Extracted, LinkExtractor};
pub use request::{InvalidUrl, Request};
pub use response::Response;
pub use selector::{Document, Selector, SelectorError};
pub use settings::{Settings, SettingsError};
pub use spider::{Output, Spider, SpiderError};
pub use stats::{CrawlReport, Progress, WorkerReport};
