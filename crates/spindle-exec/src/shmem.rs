//! `SharedMemory`: an anonymous shared mapping (memfd + `MAP_SHARED`) handed
//! to children by inheritance, and [`SharedArray`], a typed array of atomics
//! in one.
//!
//! The memfd has no name, so nothing can leak: the kernel frees it when the
//! last process holding it exits or unmaps it, crashes included — no
//! resource tracker is needed (cf. Python's gh-82300). (`memmap2::map_anon`
//! is `MAP_PRIVATE`, so it cannot be used for this.)
//!
//! # Why every safe access is atomic, and of one width
//!
//! The memory is shared by every clone of a handle, in every thread and in
//! every process it was handed to, so any access may race with another. In
//! Rust a race in which one side is a plain (non-atomic) access is undefined
//! behaviour, and so is a race between atomic accesses of *different sizes*
//! that overlap (the "mixed-size" rule of `std::sync::atomic`). So:
//!
//! * [`SharedMemory`]'s safe accessors ([`read`](SharedMemory::read),
//!   [`write`](SharedMemory::write), [`bytes`](SharedMemory::bytes)) are all
//!   byte-wide atomic (relaxed `AtomicU8`): a reader racing a writer sees
//!   some mix of old and new bytes, never undefined behaviour.
//! * Wider atomics live in a [`SharedArray`], whose element type is fixed
//!   when it is created and whose memory is reachable through no other type.
//! * Plain `memcpy` speed is available through the `unsafe`
//!   [`read_unsync`](SharedMemory::read_unsync) /
//!   [`write_unsync`](SharedMemory::write_unsync), whose caller promises
//!   that nothing else touches those bytes meanwhile.
//!
//! Between processes, the same rules are assumed to hold as between threads
//! (the hardware keeps a `MAP_SHARED` page coherent like any other memory);
//! the Rust memory model itself says nothing about other processes.

use crate::error::{Error, Result};
use crate::sys::{self, Mapping};
use crate::wire;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::marker::PhantomData;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

/// A block of memory shared between processes (Python's
/// `shared_memory.SharedMemory`).
///
/// Byte access is atomic and unordered (relaxed): [`read`](Self::read) while
/// another process [`write`](Self::write)s may see part of the old and part
/// of the new data. Hold a [`crate::Lock`] around multi-byte updates that
/// must appear whole, or use a [`SharedArray`] for counters and flags.
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

    /// Raw pointer to the start of the region, valid for [`len`](Self::len)
    /// bytes while `self` (or a clone) lives. Any access through it must
    /// follow the rules in the [module docs](self).
    pub fn as_ptr(&self) -> *mut u8 {
        self.map.as_ptr()
    }

    /// The region as bytes that may be loaded and stored concurrently.
    pub fn bytes(&self) -> &[AtomicU8] {
        // SAFETY: the mapping is `len` bytes, never remapped after `new`
        // (nothing takes `&mut` of a shared `Mapping`), and lives as long
        // as `self`. `AtomicU8` has alignment 1. Every safe access to this
        // memory is a byte-wide atomic, so handing out more atomics of the
        // same width adds no plain or mixed-size race.
        unsafe { std::slice::from_raw_parts(self.map.as_ptr().cast::<AtomicU8>(), self.len()) }
    }

    /// Copy bytes out of the region at `offset`, one relaxed atomic load per
    /// byte (about 1–2 GB/s; see [`read_unsync`](Self::read_unsync) for
    /// `memcpy` speed).
    pub fn read(&self, offset: usize, out: &mut [u8]) -> Result<()> {
        self.check(offset, out.len())?;
        let src = &self.bytes()[offset..offset + out.len()];
        for (o, s) in out.iter_mut().zip(src) {
            *o = s.load(Ordering::Relaxed);
        }
        Ok(())
    }

    /// Copy bytes into the region at `offset`, one relaxed atomic store per
    /// byte.
    pub fn write(&self, offset: usize, data: &[u8]) -> Result<()> {
        self.check(offset, data.len())?;
        let dst = &self.bytes()[offset..offset + data.len()];
        for (d, &b) in dst.iter().zip(data) {
            d.store(b, Ordering::Relaxed);
        }
        Ok(())
    }

    /// [`read`](Self::read) with a plain `memcpy`.
    ///
    /// # Safety
    ///
    /// While this call runs, no thread of any process that shares this
    /// memory may write `offset..offset + out.len()`, unless that write
    /// happens-before or after this call: for example both sides hold the
    /// same [`crate::Lock`], or the writer finished before sending a message
    /// (queue, pipe, process exit) that the reader received before calling.
    pub unsafe fn read_unsync(&self, offset: usize, out: &mut [u8]) -> Result<()> {
        self.check(offset, out.len())?;
        // SAFETY: in bounds (checked above); `copy` allows overlap; the
        // caller rules out a concurrent write to the source range.
        unsafe { std::ptr::copy(self.map.as_ptr().add(offset), out.as_mut_ptr(), out.len()) };
        Ok(())
    }

    /// [`write`](Self::write) with a plain `memcpy`.
    ///
    /// # Safety
    ///
    /// While this call runs, no thread of any process that shares this
    /// memory may read or write `offset..offset + data.len()`, unless that
    /// access happens-before or after this call (see
    /// [`read_unsync`](Self::read_unsync)).
    pub unsafe fn write_unsync(&self, offset: usize, data: &[u8]) -> Result<()> {
        self.check(offset, data.len())?;
        // SAFETY: in bounds (checked above); `copy` allows overlap; the
        // caller rules out any concurrent access to the destination range.
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

mod sealed {
    pub trait Sealed {}
}

/// An atomic type that can be an element of a [`SharedArray`]: a type with
/// no invalid bit patterns, whose all-zero value is valid (the region starts
/// zero-filled), and whose alignment is at most a page.
pub trait SharedAtomic: sealed::Sealed + Sync + Send {}

macro_rules! shared_atomic {
    ($($t:ty),*) => {$(
        impl sealed::Sealed for $t {}
        impl SharedAtomic for $t {}
    )*};
}
shared_atomic!(AtomicU8, AtomicU32, AtomicU64, AtomicI64);

/// `len` shared atomics of one type, zero-initialised (Python's
/// `multiprocessing.Array(typecode, len, lock=False)`, with atomic
/// elements). Handed to children by inheritance, like [`SharedMemory`].
///
/// The element type is part of the handle's type, and the memory is
/// reachable through no other handle, so no access can be of another width.
pub struct SharedArray<A: SharedAtomic> {
    mem: SharedMemory,
    len: usize,
    _elem: PhantomData<A>,
}

impl<A: SharedAtomic> SharedArray<A> {
    /// `len` elements, all zero (`len > 0`).
    pub fn new(len: usize) -> Result<Self> {
        let bytes = len
            .checked_mul(std::mem::size_of::<A>())
            .ok_or_else(|| Error::InvalidArgument(format!("{len} elements overflow usize")))?;
        Ok(SharedArray {
            mem: SharedMemory::new(bytes)?,
            len,
            _elem: PhantomData,
        })
    }
}

impl<A: SharedAtomic> std::ops::Deref for SharedArray<A> {
    type Target = [A];
    fn deref(&self) -> &[A] {
        // SAFETY: `new` and `deserialize` made sure the mapping holds `len`
        // elements and `len > 0`, so it is a real mmap and page-aligned,
        // which covers `A`'s alignment;
        // it never moves and lives as long as `self.mem`. Every `A` is valid
        // for any bits, zero included. The `SharedMemory` inside is private
        // and never handed out, so all access to this memory, in every
        // process, goes through `A` — atomic and of the same size.
        unsafe { std::slice::from_raw_parts(self.mem.as_ptr().cast::<A>(), self.len) }
    }
}

impl<A: SharedAtomic> Clone for SharedArray<A> {
    fn clone(&self) -> Self {
        SharedArray {
            mem: self.mem.clone(),
            len: self.len,
            _elem: PhantomData,
        }
    }
}

impl<A: SharedAtomic> std::fmt::Debug for SharedArray<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedArray")
            .field("type", &std::any::type_name::<A>())
            .field("len", &self.len)
            .finish()
    }
}

impl<A: SharedAtomic> Serialize for SharedArray<A> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        (&self.mem, self.len as u64).serialize(s)
    }
}

impl<'de, A: SharedAtomic> Deserialize<'de> for SharedArray<A> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        use serde::de::Error as _;
        let (mem, len) = <(SharedMemory, u64)>::deserialize(d)?;
        // `Deref` trusts `len`: a mapping shorter than it would let safe
        // code read past the end, and an empty one has no page-aligned
        // address (`as_ptr` is then a dangling pointer aligned for `u8` only).
        let len = usize::try_from(len)
            .ok()
            .filter(|&n| {
                n > 0
                    && n.checked_mul(std::mem::size_of::<A>())
                        .is_some_and(|b| b <= mem.len())
            })
            .ok_or_else(|| D::Error::custom("shared array empty or longer than its memory"))?;
        Ok(SharedArray {
            mem,
            len,
            _elem: PhantomData,
        })
    }
}

/// A shared `i64` counter (Python's `Value('q', 0)` without the lock: all
/// operations are atomic).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SharedCounter {
    cell: SharedArray<AtomicI64>,
}

impl SharedCounter {
    /// A counter starting at `v`.
    pub fn new(v: i64) -> Result<Self> {
        let cell = SharedArray::<AtomicI64>::new(1)?;
        cell[0].store(v, Ordering::SeqCst);
        Ok(SharedCounter { cell })
    }
    /// Current value.
    pub fn get(&self) -> i64 {
        self.cell[0].load(Ordering::SeqCst)
    }
    /// Set the value.
    pub fn set(&self, v: i64) {
        self.cell[0].store(v, Ordering::SeqCst)
    }
    /// Add `d`; returns the previous value.
    pub fn fetch_add(&self, d: i64) -> i64 {
        self.cell[0].fetch_add(d, Ordering::SeqCst)
    }
}
