//! Scrapy's MemoryUsage extension: past `MEMUSAGE_LIMIT_MB` of resident
//! memory the crawl closes (`memusage_exceeded`) and writes its stats,
//! instead of being killed by the kernel with neither; past
//! `MEMUSAGE_WARNING_MB` it warns once.

use tracing::{error, warn};

use crate::settings::Settings;
use crate::stats::Stats;

#[derive(Default)]
pub(super) struct MemoryUsage {
    warned: bool,
    /// `memusage/startup`, `memusage/max`, `memusage/limit_reached`, `memusage/warning_reached`.
    pub(super) stats: Stats,
}

impl MemoryUsage {
    /// The check timer, when a limit or a warning is set (and the extension is on).
    pub(super) fn start(&mut self, settings: &Settings) -> Option<tokio::time::Interval> {
        if let Some(rss) = resident_bytes() {
            self.stats.max("memusage/startup", rss);
            self.stats.max("memusage/max", rss);
        }
        // As in Scrapy, the check runs whenever the extension is on, so
        // `memusage/max` is tracked with no limit set.
        settings.memusage_enabled.then(|| {
            let every = settings.memusage_check_interval;
            let mut t = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            t
        })
    }

    /// Checks the resident size; true when it is past the limit.
    pub(super) fn check(&mut self, settings: &Settings) -> bool {
        let Some(rss) = resident_bytes() else {
            return false;
        };
        self.stats.max("memusage/max", rss);
        let mb = rss / (1024 * 1024);
        let limit = settings.memusage_limit_mb;
        if limit > 0 && mb > limit {
            error!("memory usage exceeded {limit} MiB ({mb} MiB resident): closing the crawl");
            self.stats.max("memusage/limit_reached", 1);
            return true;
        }
        let warning = settings.memusage_warning_mb;
        if warning > 0 && mb > warning && !self.warned {
            warn!("memory usage reached {warning} MiB ({mb} MiB resident)");
            self.warned = true;
            self.stats.max("memusage/warning_reached", 1);
        }
        false
    }
}

/// This process's resident set size (VmRSS), in bytes; `None` off Linux.
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
