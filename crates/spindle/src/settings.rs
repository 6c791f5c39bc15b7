//! Crawl settings under Scrapy's names, with Scrapy's defaults.
//!
//! Settings arrive as text (`-s NAME=VALUE` on the command line), as a TOML
//! file, or from Rust code by setting the fields directly. Every way in goes
//! through [`Settings::set`] or [`Settings::apply_toml`] so that an unknown
//! name or a bad value is reported the same way, before anything is fetched.

use std::collections::HashMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Why a setting was refused. The message names the setting and says what to fix.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SettingsError {
    /// No setting has this name.
    #[error("unknown setting `{name}`{}", suggestion.as_ref().map(|s| format!(" (did you mean `{s}`?)")).unwrap_or_default())]
    Unknown {
        /// The name as given.
        name: String,
        /// The known name closest to it, if one is close.
        suggestion: Option<String>,
    },
    /// The value is not one this setting takes.
    #[error("invalid value `{value}` for setting `{name}`: expected {expected}")]
    InvalidValue {
        /// The setting's name.
        name: String,
        /// The value as given.
        value: String,
        /// What the setting takes.
        expected: String,
    },
    /// A `-s` argument without `=`.
    #[error("`{0}` is not NAME=VALUE (for example CONCURRENT_REQUESTS=32)")]
    NotAssignment(String),
    /// A settings file that is not valid TOML: where and what.
    #[error("not valid TOML: {0}")]
    File(String),
    /// Settings that cannot go together, or one that needs another.
    #[error("{0}")]
    Conflict(String),
}

/// Per-slot overrides, as in Scrapy's `DOWNLOAD_SLOTS`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlotOverride {
    /// Requests on the wire at once in this slot.
    pub concurrency: Option<usize>,
    /// Seconds between request starts in this slot.
    pub delay: Option<f64>,
    /// Whether this slot's gaps are drawn from 0.5–1.5 × its delay.
    pub randomize_delay: Option<bool>,
}

/// Every setting spindle understands. Field docs give the Scrapy name.
///
/// The fields are private: every value goes in through [`Settings::set`]
/// (or [`Settings::with`], [`Settings::apply_toml`]), which checks it, so no
/// setting can hold a value the engine cannot honour (a per-domain cap of 0
/// would hang a crawl). [`Settings::get`] reads one back as text.
///
/// Serializable so that worker processes get exactly the parent's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    /// `CONCURRENT_REQUESTS`: requests on the wire at once, across all slots; 0 = no limit.
    pub(crate) concurrent_requests: usize,
    /// `CONCURRENT_REQUESTS_PER_DOMAIN`: requests on the wire at once per slot (host name).
    pub(crate) concurrent_requests_per_domain: usize,
    /// `CONCURRENT_REQUESTS_PER_IP`: when > 0, slots are keyed by IP address and capped by this.
    pub(crate) concurrent_requests_per_ip: usize,
    /// `DOWNLOAD_DELAY`: minimum time between request starts in one slot.
    pub(crate) download_delay: Duration,
    /// `RANDOMIZE_DOWNLOAD_DELAY`: draw each gap from 0.5–1.5 × the delay.
    pub(crate) randomize_download_delay: bool,
    /// `DOWNLOAD_SLOTS`: per-slot overrides of concurrency, delay and randomization.
    pub(crate) download_slots: HashMap<String, SlotOverride>,
    /// `DEPTH_LIMIT`: deepest request followed (start requests are depth 0); 0 = no limit.
    pub(crate) depth_limit: u32,
    /// `CLOSESPIDER_PAGECOUNT`: stop after this many page responses (robots.txt not counted); 0 = off.
    pub(crate) closespider_pagecount: u64,
    /// `CLOSESPIDER_ITEMCOUNT`: stop after this many items scraped; 0 = off.
    pub(crate) closespider_itemcount: u64,
    /// `CLOSESPIDER_ERRORCOUNT`: stop after this many spider errors; 0 = off.
    pub(crate) closespider_errorcount: u64,
    /// `CLOSESPIDER_TIMEOUT`: stop after this long; zero = off.
    pub(crate) closespider_timeout: Duration,
    /// `DOWNLOAD_TIMEOUT`: bound on one whole request, connect to last byte.
    pub(crate) download_timeout: Duration,
    /// `DOWNLOAD_MAXSIZE`: largest body accepted, in bytes; 0 = no limit.
    pub(crate) download_maxsize: u64,
    /// `USER_AGENT`.
    pub(crate) user_agent: String,
    /// `LOGSTATS_INTERVAL`: how often the "Crawled N pages" line is logged; zero = never.
    pub(crate) logstats_interval: Duration,
    /// `DOWNLOAD_WARNSIZE`: bodies larger than this are logged and counted; 0 = never.
    pub(crate) download_warnsize: u64,
    /// `ROBOTSTXT_OBEY`: fetch each origin's robots.txt first and obey it.
    pub(crate) robotstxt_obey: bool,
    /// `ROBOTSTXT_CRAWL_DELAY_MAX`: the largest robots.txt `Crawl-delay` honoured.
    pub(crate) robotstxt_crawl_delay_max: Duration,
    /// `ROBOTSTXT_CONCURRENT_REQUESTS`: the most robots.txt fetches on the
    /// wire at once; 0 means a quarter of `CONCURRENT_REQUESTS` (at least 1).
    pub(crate) robotstxt_concurrent_requests: usize,
    /// `REDIRECT_MAX_TIMES`: redirects followed for one request.
    pub(crate) redirect_max_times: u32,
    /// `RETRY_ENABLED`.
    pub(crate) retry_enabled: bool,
    /// `RETRY_TIMES`: retries after the first attempt.
    pub(crate) retry_times: u32,
    /// `RETRY_HTTP_CODES`: statuses that are retried (connection errors and timeouts always are).
    pub(crate) retry_http_codes: Vec<u16>,
    /// `RETRY_BACKOFF_BASE`: the slot pauses base × 2^(retry−1), with jitter, before a retry.
    pub(crate) retry_backoff_base: Duration,
    /// `RETRY_BACKOFF_MAX`: the longest backoff pause.
    pub(crate) retry_backoff_max: Duration,
    /// `RETRY_AFTER_MAX`: the longest pause a `Retry-After` header can impose on a slot.
    pub(crate) retry_after_max: Duration,
    /// `COOKIES_ENABLED`: keep cookie jars and send their cookies back.
    pub(crate) cookies_enabled: bool,
    /// `COOKIES_DEBUG`: log every cookie sent and received.
    pub(crate) cookies_debug: bool,
    /// `DEFAULT_REQUEST_HEADERS`: headers every request gets unless it sets its own, in order.
    pub(crate) default_request_headers: Vec<(String, String)>,
    /// `AUTOTHROTTLE_ENABLED`: each slot paces itself from the latency it measures.
    pub(crate) autothrottle_enabled: bool,
    /// `AUTOTHROTTLE_START_DELAY`: each slot's delay before its first response.
    pub(crate) autothrottle_start_delay: Duration,
    /// `AUTOTHROTTLE_MAX_DELAY`: the largest delay AutoThrottle sets.
    pub(crate) autothrottle_max_delay: Duration,
    /// `AUTOTHROTTLE_TARGET_CONCURRENCY`: requests each slot should have on the wire, on average.
    pub(crate) autothrottle_target_concurrency: f64,
    /// `AUTOTHROTTLE_DEBUG`: log every delay change.
    pub(crate) autothrottle_debug: bool,
    /// `AUTOTHROTTLE_MODE`: `delay` (Scrapy's algorithm) or `adaptive` (concurrency from latency).
    pub(crate) autothrottle_mode: ThrottleMode,
    /// `JOBDIR`: the directory that keeps the job (frontier, seen set, progress) across runs.
    pub(crate) jobdir: Option<std::path::PathBuf>,
    /// `REDIS_URL`: the Redis that holds a distributed job's shared state (scrapy-redis's name).
    pub(crate) redis_url: Option<String>,
    /// `JOB_NAME`: the distributed job's name; every worker of one crawl gives the same.
    pub(crate) job_name: Option<String>,
    /// `REDIS_LEASE_SECONDS`: how long a worker's hold on a request lasts unless renewed.
    pub(crate) redis_lease: Duration,
    /// `REDIS_PARTITIONS`: how many parts, each under its own hash tag, a
    /// distributed job's slots are spread over (a Redis Cluster puts them on its shards).
    pub(crate) redis_partitions: usize,
    /// `MEMUSAGE_ENABLED`: watch this process's memory.
    pub(crate) memusage_enabled: bool,
    /// `MEMUSAGE_LIMIT_MB`: close the crawl past this resident size; 0 = off.
    pub(crate) memusage_limit_mb: u64,
    /// `MEMUSAGE_WARNING_MB`: log a warning once past this resident size; 0 = off.
    pub(crate) memusage_warning_mb: u64,
    /// `MEMUSAGE_CHECK_INTERVAL_SECONDS`: how often memory is checked.
    pub(crate) memusage_check_interval: Duration,
    /// `DNSCACHE_ENABLED`: keep DNS answers (positive and negative) for their TTL.
    pub(crate) dnscache_enabled: bool,
    /// `DNSCACHE_SIZE`: DNS records kept in the cache.
    pub(crate) dnscache_size: usize,
    /// `DNS_TIMEOUT`: bound on one host name's lookup.
    pub(crate) dns_timeout: Duration,
    /// `DNS_NAMESERVERS`: name servers to ask instead of `/etc/resolv.conf`'s; empty = the system's.
    pub(crate) dns_nameservers: Vec<std::net::SocketAddr>,
    /// `SLOT_MAX_EXCEPTIONS`: a slot whose timeouts and connection failures since its
    /// last response reach this many is given up (Nutch's `fetcher.max.exceptions.per.queue`); 0 = never.
    pub(crate) slot_max_exceptions: u32,
    /// `DOWNLOAD_SLOW_AFTER`: a request still waiting after this long stops counting against
    /// `CONCURRENT_REQUESTS` (it keeps its place under its slot's cap); zero = never.
    pub(crate) download_slow_after: Duration,
    /// `SLOT_GC_INTERVAL`: how often idle slots are dropped (Scrapy's slot GC: 60 s).
    pub(crate) slot_gc_interval: Duration,
    /// `STATS_SLOTS_TOP`: slots listed in the stats for each ranking (requests, errors, wait).
    pub(crate) stats_slots_top: usize,
    /// `STATS_SLOTS_ALL`: list every slot in the stats.
    pub(crate) stats_slots_all: bool,
}

/// What AutoThrottle adjusts (`AUTOTHROTTLE_MODE`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ThrottleMode {
    /// Scrapy's AutoThrottle: each slot's delay follows latency / target concurrency.
    #[default]
    Delay,
    /// Each slot's concurrency follows the latency and errors it measures
    /// (TCP Vegas style), between 1 and the slot's cap; the delay stays at its minimum.
    Adaptive,
}

impl ThrottleMode {
    fn as_str(self) -> &'static str {
        match self {
            ThrottleMode::Delay => "delay",
            ThrottleMode::Adaptive => "adaptive",
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            concurrent_requests: 16,
            concurrent_requests_per_domain: 8,
            concurrent_requests_per_ip: 0,
            download_delay: Duration::ZERO,
            randomize_download_delay: true,
            download_slots: HashMap::new(),
            depth_limit: 0,
            closespider_pagecount: 0,
            closespider_itemcount: 0,
            closespider_errorcount: 0,
            closespider_timeout: Duration::ZERO,
            download_timeout: Duration::from_secs(180),
            download_maxsize: 1024 * 1024 * 1024,
            user_agent: concat!("spindle/", env!("CARGO_PKG_VERSION")).to_string(),
            logstats_interval: Duration::from_secs(60),
            download_warnsize: 32 * 1024 * 1024,
            robotstxt_obey: false,
            robotstxt_crawl_delay_max: Duration::from_secs(60),
            robotstxt_concurrent_requests: 0,
            redirect_max_times: 20,
            retry_enabled: true,
            retry_times: 2,
            retry_http_codes: vec![500, 502, 503, 504, 522, 524, 408, 429],
            retry_backoff_base: Duration::from_secs(1),
            retry_backoff_max: Duration::from_secs(60),
            retry_after_max: Duration::from_secs(300),
            cookies_enabled: true,
            cookies_debug: false,
            // Scrapy's defaults.
            default_request_headers: vec![
                (
                    "Accept".to_string(),
                    "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8".to_string(),
                ),
                ("Accept-Language".to_string(), "en".to_string()),
            ],
            autothrottle_enabled: false,
            autothrottle_start_delay: Duration::from_secs(5),
            autothrottle_max_delay: Duration::from_secs(60),
            autothrottle_target_concurrency: 1.0,
            autothrottle_debug: false,
            autothrottle_mode: ThrottleMode::Delay,
            jobdir: None,
            redis_url: None,
            job_name: None,
            redis_lease: Duration::from_secs(30),
            redis_partitions: 1,
            memusage_enabled: true,
            memusage_limit_mb: 0,
            memusage_warning_mb: 0,
            memusage_check_interval: Duration::from_secs(60),
            dnscache_enabled: true,
            dnscache_size: 10_000,
            dns_timeout: Duration::from_secs(60),
            dns_nameservers: Vec::new(),
            slot_max_exceptions: 8,
            download_slow_after: Duration::ZERO,
            slot_gc_interval: Duration::from_secs(60),
            stats_slots_top: 10,
            stats_slots_all: false,
        }
    }
}

/// The names [`Settings::set`] accepts, for suggestions and documentation.
pub const SETTING_NAMES: &[&str] = &[
    "CONCURRENT_REQUESTS",
    "CONCURRENT_REQUESTS_PER_DOMAIN",
    "CONCURRENT_REQUESTS_PER_IP",
    "DOWNLOAD_DELAY",
    "RANDOMIZE_DOWNLOAD_DELAY",
    "DOWNLOAD_SLOTS",
    "DEPTH_LIMIT",
    "CLOSESPIDER_PAGECOUNT",
    "CLOSESPIDER_ITEMCOUNT",
    "CLOSESPIDER_ERRORCOUNT",
    "CLOSESPIDER_TIMEOUT",
    "DOWNLOAD_TIMEOUT",
    "DOWNLOAD_MAXSIZE",
    "DOWNLOAD_WARNSIZE",
    "USER_AGENT",
    "LOGSTATS_INTERVAL",
    "ROBOTSTXT_OBEY",
    "ROBOTSTXT_CRAWL_DELAY_MAX",
    "ROBOTSTXT_CONCURRENT_REQUESTS",
    "REDIRECT_MAX_TIMES",
    "RETRY_ENABLED",
    "RETRY_TIMES",
    "RETRY_HTTP_CODES",
    "RETRY_BACKOFF_BASE",
    "RETRY_BACKOFF_MAX",
    "RETRY_AFTER_MAX",
    "COOKIES_ENABLED",
    "COOKIES_DEBUG",
    "DEFAULT_REQUEST_HEADERS",
    "AUTOTHROTTLE_ENABLED",
    "AUTOTHROTTLE_START_DELAY",
    "AUTOTHROTTLE_MAX_DELAY",
    "AUTOTHROTTLE_TARGET_CONCURRENCY",
    "AUTOTHROTTLE_DEBUG",
    "AUTOTHROTTLE_MODE",
    "JOBDIR",
    "REDIS_URL",
    "JOB_NAME",
    "REDIS_LEASE_SECONDS",
    "REDIS_PARTITIONS",
    "MEMUSAGE_ENABLED",
    "MEMUSAGE_LIMIT_MB",
    "MEMUSAGE_WARNING_MB",
    "MEMUSAGE_CHECK_INTERVAL_SECONDS",
    "DNSCACHE_ENABLED",
    "DNSCACHE_SIZE",
    "DNS_TIMEOUT",
    "DNS_NAMESERVERS",
    "SLOT_MAX_EXCEPTIONS",
    "DOWNLOAD_SLOW_AFTER",
    "SLOT_GC_INTERVAL",
    "STATS_SLOTS_TOP",
    "STATS_SLOTS_ALL",
];

impl Settings {
    /// Sets one setting from its text form, as given by `-s NAME=VALUE`.
    pub fn set(&mut self, name: &str, value: &str) -> Result<(), SettingsError> {
        let v = value.trim();
        match name {
            "CONCURRENT_REQUESTS" => self.concurrent_requests = parse_count(name, v)?,
            "CONCURRENT_REQUESTS_PER_DOMAIN" => {
                self.concurrent_requests_per_domain = parse_positive(name, v)?
            }
            "CONCURRENT_REQUESTS_PER_IP" => self.concurrent_requests_per_ip = parse_count(name, v)?,
            "DOWNLOAD_DELAY" => self.download_delay = parse_seconds(name, v)?,
            "RANDOMIZE_DOWNLOAD_DELAY" => self.randomize_download_delay = parse_bool(name, v)?,
            "DOWNLOAD_SLOTS" => self.download_slots = parse_slots_json(name, v)?,
            "DEPTH_LIMIT" => self.depth_limit = parse_count(name, v)?,
            "CLOSESPIDER_PAGECOUNT" => self.closespider_pagecount = parse_count(name, v)?,
            "CLOSESPIDER_ITEMCOUNT" => self.closespider_itemcount = parse_count(name, v)?,
            "CLOSESPIDER_ERRORCOUNT" => self.closespider_errorcount = parse_count(name, v)?,
            "CLOSESPIDER_TIMEOUT" => self.closespider_timeout = parse_seconds(name, v)?,
            "DOWNLOAD_TIMEOUT" => match parse_seconds(name, v)? {
                t if t.is_zero() => {
                    return Err(invalid(name, v, "a number of seconds greater than 0"))
                }
                t => self.download_timeout = t,
            },
            "DOWNLOAD_MAXSIZE" => self.download_maxsize = parse_count(name, v)?,
            "USER_AGENT" => {
                if v.is_empty() || v.contains(['\r', '\n']) {
                    return Err(invalid(name, v, "a non-empty single line of text"));
                }
                self.user_agent = v.to_string()
            }
            "LOGSTATS_INTERVAL" => match parse_seconds(name, v)? {
                t if !t.is_zero() && t < MIN_LOGSTATS_INTERVAL => {
                    return Err(invalid(
                        name,
                        v,
                        "0 (off) or a number of seconds from 0.1 to 31536000",
                    ))
                }
                t => self.logstats_interval = t,
            },
            "DOWNLOAD_WARNSIZE" => self.download_warnsize = parse_count(name, v)?,
            "ROBOTSTXT_OBEY" => self.robotstxt_obey = parse_bool(name, v)?,
            "ROBOTSTXT_CRAWL_DELAY_MAX" => self.robotstxt_crawl_delay_max = parse_seconds(name, v)?,
            "ROBOTSTXT_CONCURRENT_REQUESTS" => {
                self.robotstxt_concurrent_requests = parse_count(name, v)?
            }
            "REDIRECT_MAX_TIMES" => self.redirect_max_times = parse_count(name, v)?,
            "RETRY_ENABLED" => self.retry_enabled = parse_bool(name, v)?,
            "RETRY_TIMES" => self.retry_times = parse_count(name, v)?,
            "RETRY_HTTP_CODES" => self.retry_http_codes = parse_codes(name, v)?,
            "RETRY_BACKOFF_BASE" => self.retry_backoff_base = parse_seconds(name, v)?,
            "RETRY_BACKOFF_MAX" => self.retry_backoff_max = parse_seconds(name, v)?,
            "RETRY_AFTER_MAX" => self.retry_after_max = parse_seconds(name, v)?,
            "COOKIES_ENABLED" => self.cookies_enabled = parse_bool(name, v)?,
            "COOKIES_DEBUG" => self.cookies_debug = parse_bool(name, v)?,
            "DEFAULT_REQUEST_HEADERS" => {
                self.default_request_headers = parse_headers_json(name, v)?
            }
            "AUTOTHROTTLE_ENABLED" => self.autothrottle_enabled = parse_bool(name, v)?,
            "AUTOTHROTTLE_START_DELAY" => self.autothrottle_start_delay = parse_seconds(name, v)?,
            "AUTOTHROTTLE_MAX_DELAY" => self.autothrottle_max_delay = parse_seconds(name, v)?,
            "AUTOTHROTTLE_TARGET_CONCURRENCY" => match v.parse::<f64>() {
                Ok(c) if c.is_finite() && c > 0.0 => self.autothrottle_target_concurrency = c,
                _ => {
                    return Err(invalid(
                        name,
                        v,
                        "a number greater than 0 (for example 2.0)",
                    ))
                }
            },
            "AUTOTHROTTLE_DEBUG" => self.autothrottle_debug = parse_bool(name, v)?,
            "AUTOTHROTTLE_MODE" => {
                self.autothrottle_mode = match v.to_ascii_lowercase().as_str() {
                    "delay" => ThrottleMode::Delay,
                    "adaptive" => ThrottleMode::Adaptive,
                    _ => return Err(invalid(name, v, "delay or adaptive")),
                }
            }
            "JOBDIR" => self.jobdir = (!v.is_empty()).then(|| v.into()),
            "REDIS_URL" => {
                // One URL, or a Redis Cluster's nodes separated by commas.
                for node in v.split(',').map(str::trim).filter(|u| !u.is_empty()) {
                    redis::IntoConnectionInfo::into_connection_info(node).map_err(|e| {
                        invalid(
                            name,
                            v,
                            &format!(
                                "a Redis URL such as redis://127.0.0.1:6379/0, or a cluster's node URLs separated by commas ({e})"
                            ),
                        )
                    })?;
                }
                self.redis_url = (!v.is_empty()).then(|| v.to_string());
            }
            "JOB_NAME" => {
                if v.chars().any(|c| c.is_control() || "{}".contains(c)) {
                    return Err(invalid(
                        name,
                        v,
                        "a name without braces or control characters, for example shop-2026",
                    ));
                }
                self.job_name = (!v.is_empty()).then(|| v.to_string());
            }
            "REDIS_PARTITIONS" => match v.trim().parse::<usize>() {
                Ok(n) if (1..=4096).contains(&n) => self.redis_partitions = n,
                _ => return Err(invalid(name, v, "a whole number from 1 to 4096")),
            },
            "REDIS_LEASE_SECONDS" => match parse_seconds(name, v)? {
                t if t < Duration::from_secs(1) => {
                    return Err(invalid(name, v, "at least 1 second"));
                }
                t => self.redis_lease = t,
            },
            "MEMUSAGE_ENABLED" => self.memusage_enabled = parse_bool(name, v)?,
            "MEMUSAGE_LIMIT_MB" => self.memusage_limit_mb = parse_count(name, v)?,
            "MEMUSAGE_WARNING_MB" => self.memusage_warning_mb = parse_count(name, v)?,
            "MEMUSAGE_CHECK_INTERVAL_SECONDS" => match parse_seconds(name, v)? {
                t if t.is_zero() => {
                    return Err(invalid(name, v, "a number of seconds greater than 0"))
                }
                t => self.memusage_check_interval = t,
            },
            "DNSCACHE_ENABLED" => self.dnscache_enabled = parse_bool(name, v)?,
            "DNSCACHE_SIZE" => self.dnscache_size = parse_count(name, v)?,
            "DNS_TIMEOUT" => self.dns_timeout = parse_positive_seconds(name, v)?,
            "DNS_NAMESERVERS" => self.dns_nameservers = parse_nameservers(name, v)?,
            "SLOT_MAX_EXCEPTIONS" => self.slot_max_exceptions = parse_count(name, v)?,
            "DOWNLOAD_SLOW_AFTER" => self.download_slow_after = parse_seconds(name, v)?,
            "SLOT_GC_INTERVAL" => self.slot_gc_interval = parse_positive_seconds(name, v)?,
            "STATS_SLOTS_TOP" => self.stats_slots_top = parse_count(name, v)?,
            "STATS_SLOTS_ALL" => self.stats_slots_all = parse_bool(name, v)?,
            _ => {
                return Err(SettingsError::Unknown {
                    name: name.to_string(),
                    suggestion: suggest(name),
                })
            }
        }
        Ok(())
    }

    /// [`Settings::set`], as a builder: `Settings::default().with("DOWNLOAD_DELAY", "0.5")?`.
    pub fn with(mut self, name: &str, value: &str) -> Result<Self, SettingsError> {
        self.set(name, value)?;
        Ok(self)
    }

    /// One setting's value as text, in the form [`Settings::set`] takes;
    /// `None` for a name that is not a setting.
    pub fn get(&self, name: &str) -> Option<String> {
        let secs = |d: &Duration| d.as_secs_f64().to_string();
        let json = |v: serde_json::Value| v.to_string();
        Some(match name {
            "CONCURRENT_REQUESTS" => self.concurrent_requests.to_string(),
            "CONCURRENT_REQUESTS_PER_DOMAIN" => self.concurrent_requests_per_domain.to_string(),
            "CONCURRENT_REQUESTS_PER_IP" => self.concurrent_requests_per_ip.to_string(),
            "DOWNLOAD_DELAY" => secs(&self.download_delay),
            "RANDOMIZE_DOWNLOAD_DELAY" => self.randomize_download_delay.to_string(),
            "DOWNLOAD_SLOTS" => json(serde_json::json!(self.download_slots)),
            "DEPTH_LIMIT" => self.depth_limit.to_string(),
            "CLOSESPIDER_PAGECOUNT" => self.closespider_pagecount.to_string(),
            "CLOSESPIDER_ITEMCOUNT" => self.closespider_itemcount.to_string(),
            "CLOSESPIDER_ERRORCOUNT" => self.closespider_errorcount.to_string(),
            "CLOSESPIDER_TIMEOUT" => secs(&self.closespider_timeout),
            "DOWNLOAD_TIMEOUT" => secs(&self.download_timeout),
            "DOWNLOAD_MAXSIZE" => self.download_maxsize.to_string(),
            "DOWNLOAD_WARNSIZE" => self.download_warnsize.to_string(),
            "USER_AGENT" => self.user_agent.clone(),
            "LOGSTATS_INTERVAL" => secs(&self.logstats_interval),
            "ROBOTSTXT_OBEY" => self.robotstxt_obey.to_string(),
            "ROBOTSTXT_CRAWL_DELAY_MAX" => secs(&self.robotstxt_crawl_delay_max),
            "ROBOTSTXT_CONCURRENT_REQUESTS" => self.robotstxt_concurrent_requests.to_string(),
            "REDIRECT_MAX_TIMES" => self.redirect_max_times.to_string(),
            "RETRY_ENABLED" => self.retry_enabled.to_string(),
            "RETRY_TIMES" => self.retry_times.to_string(),
            "RETRY_HTTP_CODES" => self
                .retry_http_codes
                .iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(","),
            "RETRY_BACKOFF_BASE" => secs(&self.retry_backoff_base),
            "RETRY_BACKOFF_MAX" => secs(&self.retry_backoff_max),
            "RETRY_AFTER_MAX" => secs(&self.retry_after_max),
            "COOKIES_ENABLED" => self.cookies_enabled.to_string(),
            "COOKIES_DEBUG" => self.cookies_debug.to_string(),
            "JOBDIR" => self
                .jobdir
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            "REDIS_URL" => self.redis_url.clone().unwrap_or_default(),
            "JOB_NAME" => self.job_name.clone().unwrap_or_default(),
            "REDIS_LEASE_SECONDS" => secs(&self.redis_lease),
            "REDIS_PARTITIONS" => self.redis_partitions.to_string(),
            "MEMUSAGE_ENABLED" => self.memusage_enabled.to_string(),
            "MEMUSAGE_LIMIT_MB" => self.memusage_limit_mb.to_string(),
            "MEMUSAGE_WARNING_MB" => self.memusage_warning_mb.to_string(),
            "MEMUSAGE_CHECK_INTERVAL_SECONDS" => secs(&self.memusage_check_interval),
            "DEFAULT_REQUEST_HEADERS" => {
                let map: serde_json::Map<String, serde_json::Value> = self
                    .default_request_headers
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone().into()))
                    .collect();
                json(map.into())
            }
            "AUTOTHROTTLE_ENABLED" => self.autothrottle_enabled.to_string(),
            "AUTOTHROTTLE_START_DELAY" => secs(&self.autothrottle_start_delay),
            "AUTOTHROTTLE_MAX_DELAY" => secs(&self.autothrottle_max_delay),
            "AUTOTHROTTLE_TARGET_CONCURRENCY" => self.autothrottle_target_concurrency.to_string(),
            "AUTOTHROTTLE_DEBUG" => self.autothrottle_debug.to_string(),
            "AUTOTHROTTLE_MODE" => self.autothrottle_mode.as_str().to_string(),
            "DNSCACHE_ENABLED" => self.dnscache_enabled.to_string(),
            "DNSCACHE_SIZE" => self.dnscache_size.to_string(),
            "DNS_TIMEOUT" => secs(&self.dns_timeout),
            "DNS_NAMESERVERS" => self
                .dns_nameservers
                .iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
                .join(","),
            "SLOT_MAX_EXCEPTIONS" => self.slot_max_exceptions.to_string(),
            "DOWNLOAD_SLOW_AFTER" => secs(&self.download_slow_after),
            "SLOT_GC_INTERVAL" => secs(&self.slot_gc_interval),
            "STATS_SLOTS_TOP" => self.stats_slots_top.to_string(),
            "STATS_SLOTS_ALL" => self.stats_slots_all.to_string(),
            _ => return None,
        })
    }

    /// Adds a header every request gets (as `-H` does), replacing a default of the same name.
    pub fn add_default_header(&mut self, name: &str, value: &str) -> Result<(), SettingsError> {
        crate::request::parse_header(name, value).map_err(|e| {
            invalid(
                "DEFAULT_REQUEST_HEADERS",
                &format!("{name}: {value}"),
                &e.to_string(),
            )
        })?;
        let (name, value) = (name.trim().to_string(), value.trim().to_string());
        self.default_request_headers
            .retain(|(n, _)| !n.eq_ignore_ascii_case(&name));
        self.default_request_headers.push((name, value));
        Ok(())
    }

    /// Applies `NAME=VALUE`, the command line's form.
    pub fn set_assignment(&mut self, assignment: &str) -> Result<(), SettingsError> {
        let (name, value) = assignment
            .split_once('=')
            .ok_or_else(|| SettingsError::NotAssignment(assignment.to_string()))?;
        self.set(name.trim(), value)
    }

    /// Applies a TOML settings file: top-level `NAME = value` pairs, and
    /// `[DOWNLOAD_SLOTS."host"]` tables.
    pub fn apply_toml(&mut self, text: &str) -> Result<(), SettingsError> {
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            let at = e.span().map(|span| {
                let before = &text[..span.start.min(text.len())];
                let line = before.matches('\n').count() + 1;
                let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
                format!("line {line}, column {column}: ")
            });
            SettingsError::File(format!(
                "{}{}",
                at.unwrap_or_default(),
                e.message().trim().replace('\n', "; ")
            ))
        })?;
        for (name, value) in table {
            if name == "DEFAULT_REQUEST_HEADERS" {
                if let toml::Value::Table(table) = &value {
                    let json = serde_json::to_string(table)
                        .map_err(|e| invalid(&name, "(table)", &e.to_string()))?;
                    self.default_request_headers = parse_headers_json(&name, &json)?;
                    continue;
                }
            }
            if name == "DOWNLOAD_SLOTS" {
                let slots: HashMap<String, SlotOverride> = value
                    .try_into()
                    .map_err(|e: toml::de::Error| invalid(&name, "(table)", &e.to_string()))?;
                self.download_slots = validate_slots(&name, slots)?;
                continue;
            }
            let text = match &value {
                toml::Value::String(s) => s.clone(),
                toml::Value::Integer(_)
                | toml::Value::Float(_)
                | toml::Value::Boolean(_)
                | toml::Value::Array(_) => value.to_string(),
                other => {
                    return Err(invalid(
                        &name,
                        &other.to_string(),
                        "a number, a boolean or a string",
                    ))
                }
            };
            self.set(&name, &text)?;
        }
        Ok(())
    }

    /// The most robots.txt fetches on the wire at once
    /// (`ROBOTSTXT_CONCURRENT_REQUESTS`, or a quarter of `CONCURRENT_REQUESTS`).
    pub fn robots_budget(&self) -> usize {
        match self.robotstxt_concurrent_requests {
            0 => (self.concurrent_requests / 4).max(1),
            n => n,
        }
    }

    /// The concurrency cap every slot gets unless `DOWNLOAD_SLOTS` overrides it.
    pub fn default_slot_concurrency(&self) -> usize {
        if self.concurrent_requests_per_ip > 0 {
            self.concurrent_requests_per_ip
        } else {
            self.concurrent_requests_per_domain
        }
    }

    /// `JOBDIR`: the directory of the job this crawl keeps, if any.
    pub fn jobdir(&self) -> Option<&std::path::Path> {
        self.jobdir.as_deref()
    }

    /// `REDIS_URL` and `JOB_NAME`: the distributed job this crawl works on,
    /// if any. Fails when only one of them is given, or with `JOBDIR` too.
    pub fn distributed(&self) -> Result<Option<(&str, &str)>, SettingsError> {
        match (&self.redis_url, &self.job_name, &self.jobdir) {
            (None, _, _) => Ok(None),
            (Some(url), None, _) => Err(SettingsError::Conflict(format!(
                "REDIS_URL={url} needs JOB_NAME too: every worker of one crawl gives the same name (-s JOB_NAME=NAME)"
            ))),
            (Some(_), Some(_), Some(_)) => Err(SettingsError::Conflict(
                "REDIS_URL and JOBDIR cannot be used together: a distributed job keeps its state in Redis".into(),
            )),
            (Some(url), Some(job), None) => Ok(Some((url, job))),
        }
    }
}

fn invalid(name: &str, value: &str, expected: &str) -> SettingsError {
    SettingsError::InvalidValue {
        name: name.to_string(),
        value: value.to_string(),
        expected: expected.to_string(),
    }
}

/// The longest duration any setting takes: one year. Longer ones would overflow the clock.
pub const MAX_SECONDS: f64 = 31_536_000.0;

/// The shortest non-zero `LOGSTATS_INTERVAL`: shorter would flood the log.
const MIN_LOGSTATS_INTERVAL: Duration = Duration::from_millis(100);

fn parse_count<T: std::str::FromStr + std::fmt::Display + Bounded>(
    name: &str,
    v: &str,
) -> Result<T, SettingsError> {
    v.parse().map_err(|_| {
        if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
            invalid(
                name,
                v,
                &format!("a whole number no larger than {}", T::MAX),
            )
        } else {
            invalid(name, v, "a whole number, 0 or more")
        }
    })
}

/// The largest value of a count type, for the "too large" message.
trait Bounded {
    const MAX: u64;
}
impl Bounded for usize {
    const MAX: u64 = usize::MAX as u64;
}
impl Bounded for u64 {
    const MAX: u64 = u64::MAX;
}
impl Bounded for u32 {
    const MAX: u64 = u32::MAX as u64;
}

fn parse_positive(name: &str, v: &str) -> Result<usize, SettingsError> {
    match parse_count::<usize>(name, v)? {
        0 => Err(invalid(name, v, "a whole number, 1 or more")),
        n => Ok(n),
    }
}

fn parse_seconds(name: &str, v: &str) -> Result<Duration, SettingsError> {
    let expected = "a number of seconds from 0 to 31536000 (one year), for example 0.25";
    match v.parse::<f64>() {
        Ok(secs) if (0.0..=MAX_SECONDS).contains(&secs) => Ok(Duration::from_secs_f64(secs)),
        _ => Err(invalid(name, v, expected)),
    }
}

fn parse_positive_seconds(name: &str, v: &str) -> Result<Duration, SettingsError> {
    match parse_seconds(name, v)? {
        t if t.is_zero() => Err(invalid(name, v, "a number of seconds greater than 0")),
        t => Ok(t),
    }
}

fn parse_bool(name: &str, v: &str) -> Result<bool, SettingsError> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(invalid(name, v, "true, false, 1 or 0")),
    }
}

/// A list of HTTP statuses: `500,502` or `[500, 502]` (TOML arrays arrive in the second form).
fn parse_codes(name: &str, v: &str) -> Result<Vec<u16>, SettingsError> {
    let inner = v.trim().trim_start_matches('[').trim_end_matches(']');
    inner
        .split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(|c| match c.parse::<u16>() {
            Ok(code) if (100..=599).contains(&code) => Ok(code),
            _ => Err(invalid(
                name,
                v,
                "HTTP status codes separated by commas, e.g. 500,503",
            )),
        })
        .collect()
}

/// Name servers: `IP[:PORT]` (port 53 by default, `[v6]:PORT` for IPv6),
/// separated by commas; empty for the system's.
fn parse_nameservers(name: &str, v: &str) -> Result<Vec<std::net::SocketAddr>, SettingsError> {
    // A TOML array arrives as `["127.0.0.1:53", ...]`.
    let list = match v.strip_prefix("[\"") {
        Some(_) => &v[1..v.len().saturating_sub(1).max(1)],
        None => v,
    };
    list.split(',')
        .map(|a| a.trim().trim_matches('"'))
        .filter(|a| !a.is_empty())
        .map(|a| {
            a.parse::<std::net::SocketAddr>()
                .or_else(|_| a.parse::<std::net::IpAddr>().map(|ip| (ip, 53).into()))
                .map_err(|_| {
                    invalid(
                        name,
                        v,
                        "name server addresses IP[:PORT] separated by commas, e.g. 127.0.0.153:53",
                    )
                })
        })
        .collect()
}

fn parse_slots_json(name: &str, v: &str) -> Result<HashMap<String, SlotOverride>, SettingsError> {
    let slots = serde_json::from_str(v).map_err(|e| {
        invalid(
            name,
            v,
            &format!(
                "a JSON object such as {{\"example.com\": {{\"concurrency\": 2, \"delay\": 1.5}}}} ({e})"
            ),
        )
    })?;
    validate_slots(name, slots)
}

/// A JSON object of header names to values, each checked as HTTP allows.
fn parse_headers_json(name: &str, v: &str) -> Result<Vec<(String, String)>, SettingsError> {
    let expected =
        "a JSON object of header names to text values, such as {\"Accept-Language\": \"fr\"}";
    let map: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(v).map_err(|e| invalid(name, v, &format!("{expected} ({e})")))?;
    map.into_iter()
        .map(|(header, value)| {
            let serde_json::Value::String(value) = value else {
                return Err(invalid(name, v, expected));
            };
            crate::request::parse_header(&header, &value)
                .map_err(|e| invalid(name, v, &e.to_string()))?;
            Ok((header, value))
        })
        .collect()
}

fn validate_slots(
    name: &str,
    slots: HashMap<String, SlotOverride>,
) -> Result<HashMap<String, SlotOverride>, SettingsError> {
    for (key, slot) in &slots {
        if slot.concurrency == Some(0) {
            return Err(invalid(
                name,
                &format!("{key}: concurrency = 0"),
                &format!("a `concurrency` of 1 or more for slot `{key}`"),
            ));
        }
        if let Some(d) = slot.delay {
            if !(0.0..=MAX_SECONDS).contains(&d) {
                return Err(invalid(
                    name,
                    &format!("{key}: delay = {d}"),
                    &format!("a `delay` from 0 to 31536000 seconds (one year) for slot `{key}`"),
                ));
            }
        }
    }
    Ok(slots)
}

/// The known name closest to a misspelt one, if any is close.
fn suggest(name: &str) -> Option<String> {
    let upper = name.to_ascii_uppercase();
    SETTING_NAMES
        .iter()
        .map(|known| (edit_distance(&upper, known), *known))
        .filter(|(d, _)| *d <= 3)
        .min()
        .map(|(_, k)| k.to_string())
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_scrapy() {
        let s = Settings::default();
        assert_eq!(s.concurrent_requests, 16);
        assert_eq!(s.concurrent_requests_per_domain, 8);
        assert_eq!(s.concurrent_requests_per_ip, 0);
        assert_eq!(s.download_delay, Duration::ZERO);
        assert!(s.randomize_download_delay);
        assert_eq!(s.download_timeout, Duration::from_secs(180));
        assert_eq!(s.logstats_interval, Duration::from_secs(60));
        assert_eq!(s.depth_limit, 0);
    }

    #[test]
    fn booleans_accept_any_case_and_digits() {
        let mut s = Settings::default();
        for (text, want) in [("TRUE", true), ("False", false), ("1", true), ("0", false)] {
            s.set("RANDOMIZE_DOWNLOAD_DELAY", text).unwrap();
            assert_eq!(s.randomize_download_delay, want, "{text}");
        }
        assert!(s.set("ROBOTSTXT_OBEY", "yes").is_err());
    }

    #[test]
    fn unknown_name_suggests_the_close_one() {
        let err = Settings::default()
            .set_assignment("CONCURENT_REQUESTS=4")
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown setting `CONCURENT_REQUESTS` (did you mean `CONCURRENT_REQUESTS`?)"
        );
    }

    #[test]
    fn bad_values_name_the_setting() {
        let mut s = Settings::default();
        let err = s.set("DOWNLOAD_DELAY", "-1").unwrap_err().to_string();
        assert!(
            err.contains("DOWNLOAD_DELAY") && err.contains("-1"),
            "{err}"
        );
        assert!(s.set("CONCURRENT_REQUESTS_PER_DOMAIN", "0").is_err());
        assert!(s.set("CONCURRENT_REQUESTS", "many").is_err());
        assert!(s.set_assignment("CONCURRENT_REQUESTS").is_err());
        assert_eq!(s, Settings::default(), "a refused value changes nothing");
    }

    #[test]
    fn zero_global_cap_means_unlimited_and_is_accepted() {
        let mut s = Settings::default();
        s.set("CONCURRENT_REQUESTS", "0").unwrap();
        assert_eq!(s.concurrent_requests, 0);
    }

    #[test]
    fn toml_file_with_slots() {
        let mut s = Settings::default();
        s.apply_toml(
            r#"
            CONCURRENT_REQUESTS = 32
            DOWNLOAD_DELAY = 0.5
            RANDOMIZE_DOWNLOAD_DELAY = false
            USER_AGENT = "bot/1"
            [DOWNLOAD_SLOTS."a.test"]
            concurrency = 2
            delay = 1.5
            "#,
        )
        .unwrap();
        assert_eq!(s.concurrent_requests, 32);
        assert_eq!(s.download_delay, Duration::from_millis(500));
        assert!(!s.randomize_download_delay);
        assert_eq!(s.user_agent, "bot/1");
        assert_eq!(s.download_slots["a.test"].concurrency, Some(2));
        assert_eq!(s.download_slots["a.test"].delay, Some(1.5));
        let err = Settings::default()
            .apply_toml("[DOWNLOAD_SLOTS.\"a\"]\nconcurency = 1")
            .unwrap_err();
        assert!(err.to_string().contains("DOWNLOAD_SLOTS"), "{err}");
    }

    #[test]
    fn slots_from_json_on_the_command_line() {
        let mut s = Settings::default();
        s.set_assignment(r#"DOWNLOAD_SLOTS={"a.test": {"delay": 2, "randomize_delay": false}}"#)
            .unwrap();
        assert_eq!(s.download_slots["a.test"].randomize_delay, Some(false));
        assert!(s
            .set_assignment(r#"DOWNLOAD_SLOTS={"a.test": {"concurrency": 0}}"#)
            .is_err());
    }

    #[test]
    fn retry_codes_from_text_and_toml() {
        let mut s = Settings::default();
        s.set("RETRY_HTTP_CODES", "503, 429").unwrap();
        assert_eq!(s.retry_http_codes, [503, 429]);
        s.apply_toml("RETRY_HTTP_CODES = [500]").unwrap();
        assert_eq!(s.retry_http_codes, [500]);
        s.set("RETRY_HTTP_CODES", "").unwrap();
        assert!(s.retry_http_codes.is_empty());
        assert!(s.set("RETRY_HTTP_CODES", "5xx").is_err());
        assert!(s.set("RETRY_HTTP_CODES", "99").is_err());
    }

    #[test]
    fn default_headers_from_json_and_toml() {
        let mut s = Settings::default();
        s.set(
            "DEFAULT_REQUEST_HEADERS",
            r#"{"X-A": "1", "Accept": "text/html"}"#,
        )
        .unwrap();
        assert_eq!(
            s.default_request_headers,
            [
                ("X-A".into(), "1".into()),
                ("Accept".into(), "text/html".into())
            ]
        );
        s.apply_toml("[DEFAULT_REQUEST_HEADERS]\nX-B = \"2\"")
            .unwrap();
        assert_eq!(s.default_request_headers, [("X-B".into(), "2".into())]);
        let err = s
            .set("DEFAULT_REQUEST_HEADERS", r#"{"Bad Name": "1"}"#)
            .unwrap_err();
        assert!(err.to_string().contains("header name"), "{err}");
        assert!(s.set("DEFAULT_REQUEST_HEADERS", r#"{"X": 1}"#).is_err());
    }

    #[test]
    fn every_setting_reads_back_as_it_was_set() {
        // `get` gives text that `set` takes back to the same value, for every name.
        let mut s = Settings::default();
        s.set("DOWNLOAD_SLOTS", r#"{"a": {"delay": 1.5}}"#).unwrap();
        s.set("DOWNLOAD_DELAY", "0.25").unwrap();
        for name in SETTING_NAMES {
            let text = s.get(name).unwrap_or_else(|| panic!("{name} has no get"));
            let mut again = Settings::default();
            again
                .set(name, &text)
                .unwrap_or_else(|e| panic!("{name}={text}: {e}"));
            assert_eq!(again.get(name), Some(text), "{name}");
        }
        assert_eq!(s.get("NOT_A_SETTING"), None);
    }

    #[test]
    fn nameservers_take_a_port_or_default_to_53() {
        let mut s = Settings::default();
        s.set("DNS_NAMESERVERS", "127.0.0.153:5353, 10.0.0.1")
            .unwrap();
        assert_eq!(
            s.dns_nameservers,
            [
                "127.0.0.153:5353".parse().unwrap(),
                "10.0.0.1:53".parse().unwrap()
            ]
        );
        s.apply_toml(r#"DNS_NAMESERVERS = ["[::1]:53"]"#).unwrap();
        assert_eq!(s.dns_nameservers, ["[::1]:53".parse().unwrap()]);
        assert!(s.set("DNS_NAMESERVERS", "not-an-address").is_err());
        s.set("DNS_NAMESERVERS", "").unwrap();
        assert!(s.dns_nameservers.is_empty());
    }

    #[test]
    fn a_distributed_job_needs_a_url_a_name_and_no_jobdir() {
        let mut s = Settings::default();
        assert_eq!(s.distributed(), Ok(None));
        s.set("REDIS_URL", "redis://127.0.0.1:6379/0").unwrap();
        let err = s.distributed().unwrap_err().to_string();
        assert!(err.contains("needs JOB_NAME"), "{err}");
        s.set("JOB_NAME", "shop").unwrap();
        assert_eq!(
            s.distributed(),
            Ok(Some(("redis://127.0.0.1:6379/0", "shop")))
        );
        s.set("JOBDIR", "/tmp/x").unwrap();
        assert!(s.distributed().is_err(), "not with JOBDIR");
        assert!(s.set("REDIS_URL", "http://127.0.0.1/").is_err());
        assert!(
            s.set("REDIS_URL", "redis://a:7000,redis://b:7000").is_ok(),
            "a cluster's nodes"
        );
        assert!(
            s.set("JOB_NAME", "a{b}").is_err(),
            "braces would break the hash tag"
        );
        assert!(s.set("REDIS_LEASE_SECONDS", "0.5").is_err());
        s.set("REDIS_LEASE_SECONDS", "5").unwrap();
        assert_eq!(s.redis_lease, Duration::from_secs(5));
    }

    #[test]
    fn every_listed_name_is_parsed() {
        // Ties SETTING_NAMES (used for suggestions and docs) to `set`: a listed
        // name that `set` does not know would come back as Unknown.
        for name in SETTING_NAMES {
            let err = Settings::default().set(name, "\u{1}not a value");
            assert!(
                !matches!(err, Err(SettingsError::Unknown { .. })),
                "{name} is listed but not parsed"
            );
        }
    }

    #[test]
    fn autothrottle_settings_have_scrapy_defaults_and_are_checked() {
        let mut s = Settings::default();
        assert!(!s.autothrottle_enabled);
        assert_eq!(s.autothrottle_start_delay, Duration::from_secs(5));
        assert_eq!(s.autothrottle_max_delay, Duration::from_secs(60));
        assert_eq!(s.autothrottle_target_concurrency, 1.0);
        assert_eq!(s.autothrottle_mode, ThrottleMode::Delay);
        assert!(s.set("AUTOTHROTTLE_TARGET_CONCURRENCY", "0").is_err());
        assert!(s.set("AUTOTHROTTLE_TARGET_CONCURRENCY", "NaN").is_err());
        assert!(s.set("AUTOTHROTTLE_MODE", "fast").is_err());
        s.set("AUTOTHROTTLE_MODE", "Adaptive").unwrap();
        assert_eq!(s.autothrottle_mode, ThrottleMode::Adaptive);
        s.set("AUTOTHROTTLE_TARGET_CONCURRENCY", "2.5").unwrap();
        assert_eq!(s.get("AUTOTHROTTLE_TARGET_CONCURRENCY").unwrap(), "2.5");
    }

    #[test]
    fn per_ip_replaces_the_domain_cap() {
        let mut s = Settings::default();
        assert_eq!(s.default_slot_concurrency(), 8);
        s.set("CONCURRENT_REQUESTS_PER_IP", "3").unwrap();
        assert_eq!(s.default_slot_concurrency(), 3);
    }
}
