//! Bytes per seen URL in the dupefilter, measured with a counting allocator.
//!
//! ```sh
//! cargo run --release -p spindle --example seen_set_memory -- 10000000
//! ```
//!
//! Inserts N distinct URLs' fingerprints through the real `DupeFilter` and prints the
//! live heap bytes per URL at every million, next to a `std` `HashSet<u64>` holding the
//! same fingerprints.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};

use spindle::{fingerprint, DupeFilter};
use url::Url;

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every method forwards to `System` with the caller's arguments
// unchanged, so `System`'s guarantees carry over; the counter is a side effect.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        System.alloc_zeroed(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn live() -> usize {
    LIVE.load(Ordering::Relaxed)
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse().expect("N is a number"))
        .unwrap_or(10_000_000);
    let base = Url::parse("http://docs.test:8080/").unwrap();
    let fps: Vec<u64> = (0..n)
        .map(|i| fingerprint(&base.join(&format!("/p/{i}?q={}", i % 7)).unwrap()))
        .collect();

    let before = live();
    let mut filter = DupeFilter::default();
    let mut worst: f64 = 0.0;
    println!(
        "{:>12} {:>16} {:>18}",
        "URLs", "spindle B/URL", "std HashSet B/URL"
    );
    let mut std_rows = Vec::new();
    for (i, &fp) in fps.iter().enumerate() {
        assert!(filter.insert_fingerprint(fp), "fingerprint collision");
        let count = i + 1;
        // Below a million the shard directory's fixed 1.5 MiB dominates.
        if count >= 1_000_000 {
            worst = worst.max((live() - before) as f64 / count as f64);
        }
        if count % 1_000_000 == 0 || count == n {
            std_rows.push((count, (live() - before) as f64 / count as f64));
        }
    }
    let spindle_bytes = live() - before;
    drop(filter);

    let before = live();
    let mut set: HashSet<u64> = HashSet::new();
    let mut std_at = Vec::new();
    for (i, &fp) in fps.iter().enumerate() {
        set.insert(fp);
        let count = i + 1;
        if count % 1_000_000 == 0 || count == n {
            std_at.push((live() - before) as f64 / count as f64);
        }
    }
    for ((count, ours), theirs) in std_rows.iter().zip(&std_at) {
        println!("{count:>12} {ours:>16.2} {theirs:>18.2}");
    }
    println!(
        "spindle seen-set: {spindle_bytes} bytes for {n} URLs = {:.2} B/URL; worst at any size >= 1,000,000: {worst:.2} B/URL",
        spindle_bytes as f64 / n as f64
    );
}
