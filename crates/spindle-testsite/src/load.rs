//! Hosts whose answers slow down under load, to test a crawler that paces
//! itself from the latency it measures.
//!
//! * [`Load::growing`]: latency = base × (1 + k × n), where n is the number of
//!   this host's requests being answered, this one included. Every request is
//!   served at once; each one in flight makes all the others slower.
//! * [`Load::capacity`]: the host serves `k` requests at a time, each taking
//!   `service`; the rest wait in a first-in first-out queue. Waiting is
//!   measured, so a test can read the queue's time-averaged length.
//!
//! A [`Load`] is a handle: clone it before giving it to [`crate::Site::load`]
//! and read [`Load::stats`] from the clone after the crawl.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

/// How a host's answers depend on its load; see the module docs.
#[derive(Clone, Debug)]
pub struct Load {
    inner: Arc<Inner>,
}

#[derive(Debug)]
enum Kind {
    Growing {
        base: Duration,
        per_request: f64,
    },
    Capacity {
        service: Duration,
        permits: Semaphore,
    },
}

#[derive(Debug)]
struct Inner {
    kind: Kind,
    in_flight: AtomicUsize,
    waiting: AtomicUsize,
    stats: Mutex<LoadStats>,
}

/// What a loaded host saw.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LoadStats {
    /// Requests served.
    pub requests: u64,
    /// Total time requests spent waiting for a place (capacity hosts only).
    pub total_wait: Duration,
    /// The most requests waiting at once.
    pub max_waiting: usize,
    /// The most requests in flight (waiting or served) at once.
    pub max_in_flight: usize,
    /// Time-weighted sum of requests in flight, in request-seconds.
    pub in_flight_seconds: f64,
    /// When the first request arrived and the last one was answered.
    pub span: Option<(Instant, Instant)>,
}

impl LoadStats {
    /// Mean number of requests waiting over `duration` (Little's law: total wait / time).
    pub fn mean_waiting_over(&self, duration: Duration) -> f64 {
        self.total_wait.as_secs_f64() / duration.as_secs_f64()
    }
}

impl Load {
    /// Latency = `base` × (1 + `per_request` × requests in flight, this one included).
    pub fn growing(base: Duration, per_request: f64) -> Load {
        Load::new(Kind::Growing { base, per_request })
    }

    /// Serves `k` requests at a time, each for `service`; the others queue.
    pub fn capacity(k: usize, service: Duration) -> Load {
        Load::new(Kind::Capacity {
            service,
            permits: Semaphore::new(k),
        })
    }

    fn new(kind: Kind) -> Load {
        Load {
            inner: Arc::new(Inner {
                kind,
                in_flight: AtomicUsize::new(0),
                waiting: AtomicUsize::new(0),
                stats: Mutex::default(),
            }),
        }
    }

    /// What the host saw so far.
    pub fn stats(&self) -> LoadStats {
        self.inner.stats.lock().expect("load stats").clone()
    }

    /// Forgets what was seen so far (after a warm-up, for example).
    pub fn reset_stats(&self) {
        *self.inner.stats.lock().expect("load stats") = LoadStats::default();
    }

    /// Holds one request as the load says: waits for a place, then for its latency.
    pub(crate) async fn serve(&self) {
        let inner = &self.inner;
        let arrived = Instant::now();
        let n = inner.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        let mut waited = Duration::ZERO;
        let mut waiting_peak = 0;
        match &inner.kind {
            Kind::Growing { base, per_request } => {
                tokio::time::sleep(base.mul_f64(1.0 + per_request * n as f64)).await;
            }
            Kind::Capacity { service, permits } => {
                waiting_peak = inner.waiting.fetch_add(1, Ordering::SeqCst) + 1;
                let permit = permits.acquire().await;
                inner.waiting.fetch_sub(1, Ordering::SeqCst);
                waited = arrived.elapsed();
                tokio::time::sleep(*service).await;
                drop(permit);
            }
        }
        inner.in_flight.fetch_sub(1, Ordering::SeqCst);
        let done = Instant::now();
        let mut st = inner.stats.lock().expect("load stats");
        st.requests += 1;
        st.total_wait += waited;
        st.max_waiting = st.max_waiting.max(waiting_peak);
        st.max_in_flight = st.max_in_flight.max(n);
        st.in_flight_seconds += done.duration_since(arrived).as_secs_f64();
        st.span = Some(match st.span {
            None => (arrived, done),
            Some((first, last)) => (first.min(arrived), last.max(done)),
        });
    }
}
