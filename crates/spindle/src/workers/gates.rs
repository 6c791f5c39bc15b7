//! Send gates in memory shared with the worker processes, so that each
//! worker passes its slot's gate itself, right before it sends: the delay
//! then holds at the wire however late a job reaches its worker, and across
//! every worker that sends for the slot.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use spindle_exec::SharedArray;

use crate::downloader::gate::{GateCells, SendGate};
use crate::downloader::slot::Pacing;
use crate::scheduler::SlotId;

/// Gates in shared memory (3 cells of 8 bytes each: 1.5 MiB). Slots beyond
/// this many share a gate with another slot (id modulo), which can only
/// space their sends further apart, never closer.
const MAX_GATES: usize = 1 << 16;

/// Every slot's gate cells, shared with the workers by inheritance.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SharedGates(SharedArray<AtomicU64>);

/// Which gate a job passes, and the gap after it: what a worker needs to
/// pace a send the engine started.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Ticket {
    /// The gate's index in [`SharedGates`].
    pub gate: u32,
    /// Nanoseconds before the slot's next send.
    pub gap_ns: u64,
    /// The shortest gap allowed at the wire, in nanoseconds.
    pub floor_ns: u64,
}

struct Cells {
    gates: SharedGates,
    index: usize,
}

impl GateCells for Cells {
    fn cells(&self) -> &[AtomicU64] {
        &self.gates.0[self.index * 3..self.index * 3 + 3]
    }
}

impl SharedGates {
    /// Zeroed cells: every gate fresh.
    pub fn new() -> spindle_exec::Result<Self> {
        Ok(SharedGates(SharedArray::new(MAX_GATES * 3)?))
    }

    fn index(slot: SlotId) -> u32 {
        (slot % MAX_GATES) as u32
    }

    /// The gate of a slot.
    pub fn for_slot(&self, slot: SlotId) -> SendGate {
        self.at(Self::index(slot))
    }

    /// The gate a ticket names (in a worker).
    pub fn at(&self, gate: u32) -> SendGate {
        SendGate::on(Arc::new(Cells {
            gates: self.clone(),
            index: gate as usize % MAX_GATES,
        }))
    }

    /// The ticket for a send in `slot` with `gap` after it.
    pub fn ticket(slot: SlotId, pacing: &Pacing) -> Ticket {
        let ns = |d: std::time::Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX / 4);
        Ticket {
            gate: Self::index(slot),
            gap_ns: ns(pacing.gap),
            floor_ns: ns(pacing.floor),
        }
    }

    /// The pacing a ticket carries, on this process's view of the gates.
    pub fn pacing(&self, ticket: &Ticket) -> Pacing {
        Pacing {
            gate: self.at(ticket.gate),
            gap: std::time::Duration::from_nanos(ticket.gap_ns),
            floor: std::time::Duration::from_nanos(ticket.floor_ns),
        }
    }
}
