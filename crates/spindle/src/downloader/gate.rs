//! The send gate: spaces the sends of one slot at the last moment before a
//! request leaves for the server, so that the delay holds at the wire.
//!
//! The scheduler decides when a request may start, but the task that sends
//! it may run later (a busy runtime in one process; a pipe, another
//! process's scheduler and its runtime in multi-process mode). A request
//! that was started on time but sent late, followed by one sent on time,
//! would reach the server closer together than the delay. So every request
//! also passes its slot's gate just before it is sent, and the gate spaces
//! the passes by the gap the scheduler drew for each start.
//!
//! The gate's state is three atomic cells (last pass, next allowed pass,
//! shortest gap seen) in `CLOCK_MONOTONIC` nanoseconds, which every process
//! on the machine reads alike, and all zero when fresh. In one process the cells are the gate's
//! own; in multi-process mode they live in memory shared with the workers
//! (see `workers::SharedGates`), and each worker passes the gate itself,
//! right before it sends: the spacing then holds however late a job reaches
//! its worker, and across all workers of a slot.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Where a gate's cells live: `[last pass, next allowed pass, shortest gap]`.
pub trait GateCells: Send + Sync {
    /// The three cells.
    fn cells(&self) -> &[AtomicU64];
}

struct LocalCells([AtomicU64; 3]);

impl GateCells for LocalCells {
    fn cells(&self) -> &[AtomicU64] {
        &self.0
    }
}

const LAST: usize = 0;
const NEXT: usize = 1;
const MIN: usize = 2;
/// A cell value that means "never": zero-filled shared memory reads as fresh.
const NEVER: u64 = 0;

/// A send's place at the gate, from [`SendGate::try_claim`] to [`SendGate::commit`].
#[derive(Debug, Clone, Copy)]
pub struct Claim {
    /// When the send was due (`CLOCK_MONOTONIC` ns).
    due: u64,
    /// The value the claim put in the "next" cell.
    held: u64,
}

/// One slot's send gate; cloning shares it.
#[derive(Clone)]
pub struct SendGate {
    cells: Arc<dyn GateCells>,
}

impl fmt::Debug for SendGate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SendGate")
            .field("min_gap", &self.min_gap())
            .finish()
    }
}

impl Default for SendGate {
    fn default() -> Self {
        SendGate::on(Arc::new(LocalCells(Default::default())))
    }
}

impl SendGate {
    /// A gate on cells that live elsewhere (shared memory).
    pub fn on(cells: Arc<dyn GateCells>) -> Self {
        SendGate { cells }
    }

    /// Waits until this slot may send, then records the send and the gap
    /// before the next one, both at once: for callers with no socket to
    /// watch. The downloader itself claims before the write and commits
    /// after it (see `wire`), so that the spacing holds at the socket.
    #[cfg(test)]
    pub async fn pass(&self, gap: Duration) {
        loop {
            match self.try_claim(gap, gap) {
                Ok(claim) => return self.commit(claim, gap, gap),
                Err(until) => {
                    let now = monotonic_nanos();
                    tokio::time::sleep(Duration::from_nanos(until.saturating_sub(now))).await;
                }
            }
        }
    }

    /// How long until the slot could send, as far as is known now. The
    /// downloader adds it to a request's `DOWNLOAD_TIMEOUT`, which counts
    /// from when the request may go, and waits for the gate at the socket
    /// itself, so that the write follows the gate's opening at once.
    pub fn wait_hint(&self) -> Duration {
        let next = self.cells.cells()[NEXT].load(Ordering::Acquire);
        Duration::from_nanos(next.saturating_sub(monotonic_nanos()))
    }

    /// Claims the next send if the slot may send now; otherwise returns the
    /// `CLOCK_MONOTONIC` nanosecond (see [`monotonic_nanos`]) to try again
    /// at. Concurrent claimers (tasks or processes) race on one
    /// compare-and-swap, so exactly one of them goes at a time. The claim
    /// holds the slot for `gap` from now until [`SendGate::commit`] sets
    /// the next opening from when the bytes really left.
    pub fn try_claim(&self, gap: Duration, floor: Duration) -> Result<Claim, u64> {
        let cells = self.cells.cells();
        let window = nanos(catch_up_window(floor));
        let gap = nanos(gap);
        loop {
            let now = monotonic_nanos();
            let next = cells[NEXT].load(Ordering::Acquire);
            if next > now {
                return Err(next);
            }
            let held = now.saturating_add(gap);
            if cells[NEXT]
                .compare_exchange(next, held, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                // A send that comes soon after the gate opened was due then,
                // and late (a starved runtime, a timer that fired late): its
                // gap counts from the opening, so that lateness does not add
                // up from one send to the next. Much later, the slot was
                // idle, and the gap counts from now.
                let due = if next != NEVER && now - next < window {
                    next
                } else {
                    now
                };
                return Ok(Claim { due, held });
            }
        }
    }

    /// Records that the claimed send has just been written to its socket.
    /// The next send may come `gap` after this one was due, and never
    /// sooner than `floor` after now. Called after the write returned, so
    /// "now" is no earlier than the moment the kernel took the bytes,
    /// however long the thread was descheduled in between: two sends are at
    /// least `floor` apart at the wire, with no margin. With a fixed delay
    /// the floor is the gap itself; with a randomized one it is half the
    /// delay (Scrapy's lowest draw), and a late send's successor may use up
    /// the lateness down to it, so that the mean gap stays the delay.
    pub fn commit(&self, claim: Claim, gap: Duration, floor: Duration) {
        let cells = self.cells.cells();
        let now = monotonic_nanos();
        let next = claim
            .due
            .saturating_add(nanos(gap))
            .max(now.saturating_add(nanos(floor)));
        // Replace the hold the claim put in place; a raise made meanwhile
        // (`raise_floor`) is kept.
        if cells[NEXT]
            .compare_exchange(claim.held, next, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            cells[NEXT].fetch_max(next, Ordering::AcqRel);
        }
        let last = cells[LAST].swap(now, Ordering::AcqRel);
        if last != NEVER {
            // Stored as MAX - gap, so that zero-filled memory means "none"
            // and the shortest gap is the largest value.
            cells[MIN].fetch_max(u64::MAX - now.saturating_sub(last), Ordering::Relaxed);
        }
    }

    /// No pass comes sooner than `floor` after the last one (a robots.txt
    /// `Crawl-delay` that arrived after sends were already spaced).
    pub fn raise_floor(&self, floor: Duration) {
        let cells = self.cells.cells();
        let last = cells[LAST].load(Ordering::Acquire);
        if last == NEVER {
            return;
        }
        let floor = nanos(floor);
        cells[NEXT].fetch_max(last.saturating_add(floor), Ordering::AcqRel);
    }

    /// The shortest time between two passes so far: the crawler's own account
    /// of its spacing, to compare with what a server recorded.
    pub fn min_gap(&self) -> Option<Duration> {
        match self.cells.cells()[MIN].load(Ordering::Relaxed) {
            NEVER => None,
            n => Some(Duration::from_nanos(u64::MAX - n)),
        }
    }
}

/// How late a send may be and still count as due when the gate opened:
/// four floors, twice a randomized delay. Lateness seen with both cores
/// busy and other builds running (load 7 to 12) reached 110 ms on a 100 ms
/// delay. Making up more is harmless to politeness (no gap is ever below
/// the floor, itself Scrapy's lowest draw); it is bounded so that a slot
/// back from idling does not start with a short gap by rule.
pub fn catch_up_window(floor: Duration) -> Duration {
    floor * 4
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX / 4)
}

/// `CLOCK_MONOTONIC` in nanoseconds, + 1 so that 0 means "never". The same
/// clock `Instant` and tokio's timers use, and the same in every process.
pub fn monotonic_nanos() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `clock_gettime` writes one `timespec` to the valid pointer we
    // pass; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64 + 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[tokio::test]
    async fn passes_are_spaced_by_the_gap_and_counted() {
        let gate = SendGate::default();
        assert_eq!(gate.min_gap(), None);
        let t0 = Instant::now();
        gate.pass(Duration::from_millis(60)).await;
        gate.pass(Duration::from_millis(60)).await;
        gate.pass(Duration::ZERO).await;
        assert!(
            t0.elapsed() >= Duration::from_millis(120),
            "{:?}",
            t0.elapsed()
        );
        assert!(gate.min_gap().unwrap() >= Duration::from_millis(60));
    }

    #[tokio::test]
    async fn concurrent_passers_go_one_gap_apart() {
        let gate = SendGate::default();
        let t0 = Instant::now();
        let tasks: Vec<_> = (0..4)
            .map(|_| {
                let g = gate.clone();
                tokio::spawn(async move {
                    g.pass(Duration::from_millis(30)).await;
                    Instant::now()
                })
            })
            .collect();
        let mut times = Vec::new();
        for t in tasks {
            times.push(t.await.unwrap());
        }
        times.sort();
        for pair in times.windows(2) {
            assert!(pair[1] - pair[0] >= Duration::from_millis(30), "{times:?}");
        }
        assert!(t0.elapsed() >= Duration::from_millis(90));
    }

    #[test]
    fn a_late_send_is_made_up_down_to_the_floor_and_a_fixed_gap_never_is() {
        // Long enough that a busy machine's oversleeping (tens of ms) cannot
        // turn the late send into one after an idle slot (a gap late).
        let gap = Duration::from_millis(1000);
        let floor = Duration::from_millis(500);
        let gate = SendGate::default();
        let claim = gate.try_claim(gap, floor).unwrap();
        gate.commit(claim, gap, floor);
        let opened = gate.try_claim(gap, floor).unwrap_err();
        // This send goes 30 ms after the gate opened (a late wake-up).
        while monotonic_nanos() < opened + 30_000_000 {
            std::thread::sleep(Duration::from_millis(1));
        }
        let claim = gate.try_claim(gap, floor).unwrap();
        assert_eq!(claim.due, opened, "it was due at the opening");
        let sent = monotonic_nanos();
        gate.commit(claim, gap, floor);
        let next = gate.try_claim(gap, floor).unwrap_err();
        // The next opening counts from when it was due, not from the send,
        // and is never less than the floor after the send.
        assert!(next >= sent + 500_000_000, "floor held");
        assert_eq!(next, opened + 1_000_000_000, "counted from the opening");
        assert!(next < sent + 1_000_000_000, "lateness made up");

        // With a fixed delay the floor is the gap: nothing is made up.
        let fixed = SendGate::default();
        let claim = fixed.try_claim(gap, gap).unwrap();
        fixed.commit(claim, gap, gap);
        let opened = fixed.try_claim(gap, gap).unwrap_err();
        while monotonic_nanos() < opened + 30_000_000 {
            std::thread::sleep(Duration::from_millis(1));
        }
        let claim = fixed.try_claim(gap, gap).unwrap();
        let sent = monotonic_nanos();
        fixed.commit(claim, gap, gap);
        assert!(fixed.try_claim(gap, gap).unwrap_err() >= sent + 1_000_000_000);
    }

    #[tokio::test]
    async fn a_floor_pushes_the_next_pass_later() {
        let gate = SendGate::default();
        gate.pass(Duration::ZERO).await;
        let t0 = Instant::now();
        gate.raise_floor(Duration::from_millis(80));
        gate.pass(Duration::ZERO).await;
        assert!(
            t0.elapsed() >= Duration::from_millis(70),
            "{:?}",
            t0.elapsed()
        );
    }
}
