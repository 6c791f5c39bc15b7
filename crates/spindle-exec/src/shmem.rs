//! `SharedMemory`: an anonymous shared mapping (memfd + `MAP_SHARED`) handed
//! to children by inheritance, with typed atomic views.
//!
//! The memfd has no name, so nothing can leak: the kernel frees it when the
//! last process holding it exits or unmaps it, crashes included — no
//! resource tracker is needed (cf. Python's gh-82300). (`memmap2::map_anon`
//! is `MAP_PRIVATE`, so it cannot be used for this.)

use crate::error::{Error, Result};
use crate::sys::{self, Mapping};
use crate::wire;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, AtomicU8};
use std::sync::Arc;

/// A block of memory shared between processes (Python's
/// `shared_memory.SharedMemory`, `Value` and `Array` roles).
///
/// Byte access ([`read`](SharedMemory::read)/[`write`](SharedMemory::write))
/// is not synchronized; use the atomic views or a [`crate::Lock`] for data
/// that several processes update.
#[derive(Clone)]
pub struct SharedMemory {
    map: Arc<Mapping>,
}

impl std::fmt::Debug for SharedMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedMemory")
            .field("len", &self.len())
            .finish()
    }
}

impl SharedMemory {
    /// A zero-filled region of `size` bytes (rounded up to a page; `size > 0`).
    pub fn new(size: usize) -> Result<Self> {
        if size == 0 {
            return Err(Error::InvalidArgument(
                "'size' must be a positive number different from zero".into(),
            ));
        }
        let fd = sys::memfd("spindle-exec-shm")?;
        let mut m = Mapping::new(fd)?;
        m.ensure(size)?;
        Ok(SharedMemory { map: Arc::new(m) })
    }

    /// Size in bytes (may exceed the requested size, as in Python).
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Always false (a region has at least one page).
    pub fn is_empty(&self) -> bool {
        self.map.len() == 0
    }

    /// Raw pointer to the start of the region.
    pub fn as_ptr(&self) -> *mut u8 {
        self.map.as_ptr()
    }

    /// Copy bytes out of the region at `offset`.
    pub fn read(&self, offset: usize, out: &mut [u8]) -> Result<()> {
        self.check(offset, out.len())?;
        // SAFETY: bounds checked; bytes are plain data (a concurrent writer
        // can only make the copy see a mix of old and new bytes).
        unsafe { std::ptr::copy(self.map.as_ptr().add(offset), out.as_mut_ptr(), out.len()) };
        Ok(())
    }

    /// Copy bytes into the region at `offset`.
    pub fn write(&self, offset: usize, data: &[u8]) -> Result<()> {
        self.check(offset, data.len())?;
        // SAFETY: bounds checked; see `read`.
        unsafe { std::ptr::copy(data.as_ptr(), self.map.as_ptr().add(offset), data.len()) };
        Ok(())
    }

    fn check(&self, offset: usize, len: usize) -> Result<()> {
        match offset.checked_add(len) {
            Some(end) if end <= self.len() => Ok(()),
            _ => Err(Error::InvalidArgument(format!(
                "range {offset}+{len} outside shared memory of {} bytes",
                self.len()
            ))),
        }
    }

    /// The region as an array of `AtomicU64` (counters, flags).
    pub fn atomic_u64s(&self) -> &[AtomicU64] {
        self.atomics::<AtomicU64>()
    }

    /// The region as an array of `AtomicI64` (Python's `Value('q')`/`Array('q')`).
    pub fn atomic_i64s(&self) -> &[AtomicI64] {
        self.atomics::<AtomicI64>()
    }

    /// The region as an array of `AtomicU32`.
    pub fn atomic_u32s(&self) -> &[AtomicU32] {
        self.atomics::<AtomicU32>()
    }

    /// The region as an array of `AtomicU8`.
    pub fn atomic_u8s(&self) -> &[AtomicU8] {
        self.atomics::<AtomicU8>()
    }

    fn atomics<A>(&self) -> &[A] {
        let n = self.len() / std::mem::size_of::<A>();
        // SAFETY: the mapping is page-aligned, lives as long as `self`, and
        // atomics may alias across processes (all access is atomic).
        unsafe { std::slice::from_raw_parts(self.map.as_ptr().cast::<A>(), n) }
    }
}

impl Serialize for SharedMemory {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::Error as _;
        wire::share_fd(self.map.fd.as_raw_fd())
            .map_err(S::Error::custom)?
            .serialize(s)
    }
}

impl<'de> Deserialize<'de> for SharedMemory {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        use serde::de::Error as _;
        let n = i32::deserialize(d)?;
        let fd = wire::adopt_fd(n, false).map_err(D::Error::custom)?;
        let m = Mapping::new(fd).map_err(D::Error::custom)?;
        Ok(SharedMemory { map: Arc::new(m) })
    }
}

/// A shared `i64` counter (Python's `Value('q', 0)` without the lock: all
/// operations are atomic).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SharedCounter {
    mem: SharedMemory,
}

impl SharedCounter {
    /// A counter starting at `v`.
    pub fn new(v: i64) -> Result<Self> {
        let mem = SharedMemory::new(8)?;
        mem.atomic_i64s()[0].store(v, std::sync::atomic::Ordering::SeqCst);
        Ok(SharedCounter { mem })
    }
    /// Current value.
    pub fn get(&self) -> i64 {
        self.mem.atomic_i64s()[0].load(std::sync::atomic::Ordering::SeqCst)
    }
    /// Set the value.
    pub fn set(&self, v: i64) {
        self.mem.atomic_i64s()[0].store(v, std::sync::atomic::Ordering::SeqCst)
    }
    /// Add `d`; returns the previous value.
    pub fn fetch_add(&self, d: i64) -> i64 {
        self.mem.atomic_i64s()[0].fetch_add(d, std::sync::atomic::Ordering::SeqCst)
    }
}
