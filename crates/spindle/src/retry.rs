//! Retry policy: which failures are retried, and how long the slot pauses first.
//!
//! Scrapy retries at once, which hammers a site that is already failing.
//! Here each retry pauses its slot — and only its slot — for an exponential
//! backoff with jitter, or for as long as a 429/503 `Retry-After` asks.

use std::time::{Duration, SystemTime};

use http::header::{HeaderMap, RETRY_AFTER};
use rand::Rng;

use crate::settings::Settings;

/// The pause before retry number `retry` (1 for the first retry): base × 2^(retry−1),
/// capped, then scaled by a random factor in [0.5, 1] so that slots failing
/// together do not retry in lockstep.
pub fn backoff(settings: &Settings, retry: u32, rng: &mut impl Rng) -> Duration {
    let exp = settings
        .retry_backoff_base
        .saturating_mul(1u32 << retry.saturating_sub(1).min(20));
    exp.min(settings.retry_backoff_max)
        .mul_f64(rng.gen_range(0.5..=1.0))
}

/// How long a 429 or 503 asks the client to wait, capped by `RETRY_AFTER_MAX`.
pub fn retry_after(
    status: u16,
    headers: &HeaderMap,
    settings: &Settings,
    now: SystemTime,
) -> Option<Duration> {
    if status != 429 && status != 503 {
        return None;
    }
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    let wait = match value.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => httpdate::parse_http_date(value)
            .ok()?
            .duration_since(now)
            .unwrap_or(Duration::ZERO),
    };
    Some(wait.min(settings.retry_after_max))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn backoff_doubles_with_jitter_and_a_cap() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let s = Settings {
            retry_backoff_base: Duration::from_millis(100),
            retry_backoff_max: Duration::from_millis(350),
            ..Settings::default()
        };
        for _ in 0..100 {
            let b1 = backoff(&s, 1, &mut rng);
            let b2 = backoff(&s, 2, &mut rng);
            let b9 = backoff(&s, 9, &mut rng);
            assert!((50..=100).contains(&b1.as_millis()), "{b1:?}");
            assert!((100..=200).contains(&b2.as_millis()), "{b2:?}");
            assert!((175..=350).contains(&b9.as_millis()), "{b9:?}");
        }
    }

    #[test]
    fn retry_after_in_seconds_or_as_a_date() {
        let s = Settings::default();
        let now = SystemTime::now();
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(retry_after(429, &h, &s, now), Some(Duration::from_secs(7)));
        assert_eq!(retry_after(500, &h, &s, now), None, "only 429 and 503");
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        h.insert(RETRY_AFTER, later.parse().unwrap());
        let wait = retry_after(503, &h, &s, now).unwrap();
        assert!((29..=30).contains(&wait.as_secs()), "{wait:?}");
        h.insert(RETRY_AFTER, "999999".parse().unwrap());
        assert_eq!(retry_after(503, &h, &s, now), Some(s.retry_after_max));
        h.insert(RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after(503, &h, &s, now), None);
    }
}
