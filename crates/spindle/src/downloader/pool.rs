//! Idle HTTP/1.1 connections kept for reuse, bounded per origin and in all.
//!
//! The pool is ours rather than the HTTP client's for two reasons: a
//! request must know which connection it goes out on, so that the
//! connection's stream can hold its first write at the send gate (see
//! `wire`); and a broad crawl must not pay for hosts it no longer talks to:
//! an origin with no idle connection has no entry here at all, idle
//! connections are closed after [`POOL_IDLE_TIMEOUT`], and past
//! `max_idle_total` the longest idle is closed first. Idle sockets are
//! file descriptors, and descriptors are a budget.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::client::conn::http1::SendRequest;

use super::connect::Origin;
use super::wire::Arming;

/// How long an idle connection is kept for reuse (hyper's default is 90 s).
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// One HTTP/1.1 connection: where to send requests, and how to arm its gate.
pub struct Conn {
    /// hyper's handle on the connection (its task runs on the runtime).
    pub sender: SendRequest<Full<Bytes>>,
    /// The slot's pacing for the next request's first write.
    pub arming: Arc<Arming>,
    /// Whether it served a request before: a reused connection may have been
    /// closed by the server while idle, so a request it could not send is
    /// tried once on a fresh one.
    pub reused: bool,
}

struct Idle {
    conn: Conn,
    since: Instant,
}

impl Idle {
    /// Still open, and not idle for too long.
    fn usable(&self) -> bool {
        !self.conn.sender.is_closed() && self.since.elapsed() < POOL_IDLE_TIMEOUT
    }
}

/// The idle connections, per origin.
pub struct Pool {
    inner: Arc<Mutex<Inner>>,
}

struct Inner {
    idle: HashMap<Origin, Vec<Idle>>,
    total: usize,
    max_per_origin: usize,
    max_total: usize,
    sweeper: bool,
}

impl Pool {
    /// A pool keeping at most `max_per_origin` idle connections to one
    /// origin and `max_total` in all.
    pub fn new(max_per_origin: usize, max_total: usize) -> Self {
        Pool {
            inner: Arc::new(Mutex::new(Inner {
                idle: HashMap::new(),
                total: 0,
                max_per_origin,
                max_total,
                sweeper: false,
            })),
        }
    }

    /// The most recently used idle connection to `origin` that is still
    /// open, if any. (Most recent: the least likely to have been closed by
    /// the server's keep-alive timeout.)
    pub fn take(&self, origin: &Origin) -> Option<Conn> {
        let mut inner = self.inner.lock().expect("pool");
        let inner = &mut *inner;
        let list = inner.idle.get_mut(origin)?;
        let mut found = None;
        while let Some(idle) = list.pop() {
            inner.total -= 1;
            if idle.usable() {
                found = Some(idle.conn);
                break;
            }
        }
        if list.is_empty() {
            inner.idle.remove(origin);
        }
        found.map(|mut conn| {
            conn.reused = true;
            conn
        })
    }

    /// Keeps `conn` for the next request to `origin`, if there is room.
    pub fn put(&self, origin: Origin, conn: Conn) {
        if conn.sender.is_closed() {
            return;
        }
        conn.arming.disarm();
        let mut guard = self.inner.lock().expect("pool");
        let inner = &mut *guard;
        if inner.max_per_origin == 0 || inner.max_total == 0 {
            return;
        }
        if inner.total >= inner.max_total {
            inner.close_longest_idle();
        }
        let list = inner.idle.entry(origin).or_default();
        if list.len() >= inner.max_per_origin {
            list.remove(0);
            inner.total -= 1;
        }
        list.push(Idle {
            conn,
            since: Instant::now(),
        });
        inner.total += 1;
        if !inner.sweeper {
            inner.sweeper = true;
            spawn_sweeper(Arc::downgrade(&self.inner));
        }
    }

    /// How many idle connections are kept.
    #[cfg(test)]
    pub fn idle_count(&self) -> usize {
        self.inner.lock().expect("pool").total
    }
}

impl Inner {
    fn close_longest_idle(&mut self) {
        let oldest = self
            .idle
            .iter()
            .filter_map(|(origin, list)| list.first().map(|i| (i.since, origin.clone())))
            .min_by_key(|(since, _)| *since);
        if let Some((_, origin)) = oldest {
            let list = self.idle.get_mut(&origin).expect("just seen");
            list.remove(0);
            self.total -= 1;
            if list.is_empty() {
                self.idle.remove(&origin);
            }
        }
    }

    /// Closes connections idle too long or closed by their server.
    fn sweep(&mut self) {
        let mut total = 0;
        self.idle.retain(|_, list| {
            list.retain(Idle::usable);
            total += list.len();
            !list.is_empty()
        });
        self.total = total;
        if self.idle.capacity() > 4 * self.idle.len().max(16) {
            // A broad crawl's peak of origins is not kept once they are gone.
            self.idle.shrink_to_fit();
        }
    }
}

fn spawn_sweeper(inner: Weak<Mutex<Inner>>) {
    let Ok(handle) = tokio::runtime::Handle::try_current() else {
        return;
    };
    handle.spawn(async move {
        loop {
            tokio::time::sleep(POOL_IDLE_TIMEOUT / 4).await;
            let Some(inner) = inner.upgrade() else {
                return;
            };
            inner.lock().expect("pool").sweep();
        }
    });
}
