//! Cross-process `Lock` and `RLock` that are released when their holder dies.
//!
//! The lock is `flock(2)` on an anonymous memfd: the kernel drops an flock
//! when the last descriptor of its open file description closes, which
//! happens when the holding process dies — SIGKILL included. A killed holder
//! therefore never deadlocks the others (unlike `raw_sync`'s non-robust
//! pthread mutexes or a plain semaphore). Every process (and every
//! `Lock::new`) uses its own open file description (children reopen
//! `/proc/self/fd/N`), and a per-process mutex/condvar serializes threads
//! of one process, since flock does not distinguish threads.
//!
//! Difference from Python: only the holding process may release.

use crate::error::{Error, Result};
use crate::sys::{self, Deadline};
use crate::wire;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::ThreadId;
use std::time::Duration;

struct Inner {
    fd: OwnedFd,
    held: Mutex<bool>,
    cv: Condvar,
}

/// A non-recursive lock shared by processes and threads (Python's
/// `multiprocessing.Lock`). Clone to share within a process; pass in
/// [`crate::Process`] arguments or a pool initializer to share with children.
#[derive(Clone)]
pub struct Lock {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Lock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lock").finish()
    }
}

/// Releases the [`Lock`] when dropped.
pub struct LockGuard<'a> {
    lock: &'a Lock,
}

impl Drop for LockGuard<'_> {
    fn drop(&mut self) {
        let _ = self.lock.release();
    }
}

impl Lock {
    /// A new, unlocked lock.
    pub fn new() -> Result<Self> {
        Ok(Self::from_fd(sys::memfd("spindle-exec-lock")?))
    }

    fn from_fd(fd: OwnedFd) -> Self {
        Lock {
            inner: Arc::new(Inner {
                fd,
                held: Mutex::new(false),
                cv: Condvar::new(),
            }),
        }
    }

    fn local(&self) -> MutexGuard<'_, bool> {
        self.inner.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Acquire, blocking.
    pub fn acquire(&self) -> Result<()> {
        if self.acquire_deadline(Deadline::never())? {
            Ok(())
        } else {
            Err(Error::Timeout)
        }
    }

    /// Acquire, waiting at most `timeout`; `Ok(false)` on timeout.
    pub fn acquire_timeout(&self, timeout: Duration) -> Result<bool> {
        self.acquire_deadline(Deadline::after(Some(timeout)))
    }

    /// Acquire without waiting; `Ok(false)` if held elsewhere.
    pub fn try_acquire(&self) -> Result<bool> {
        self.acquire_timeout(Duration::ZERO)
    }

    /// Acquire and return a guard that releases on drop.
    pub fn lock(&self) -> Result<LockGuard<'_>> {
        self.acquire()?;
        Ok(LockGuard { lock: self })
    }

    /// Acquire within `timeout` and return a guard ([`Error::Timeout`]).
    pub fn lock_timeout(&self, timeout: Duration) -> Result<LockGuard<'_>> {
        if self.acquire_timeout(timeout)? {
            Ok(LockGuard { lock: self })
        } else {
            Err(Error::Timeout)
        }
    }

    fn acquire_deadline(&self, d: Deadline) -> Result<bool> {
        // 1. Exclude the other threads of this process.
        let mut held = self.local();
        while *held {
            held = match d.remaining() {
                None => self.inner.cv.wait(held).unwrap_or_else(|p| p.into_inner()),
                Some(r) if r.is_zero() => return Ok(false),
                Some(r) => {
                    self.inner
                        .cv
                        .wait_timeout(held, r)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
            };
        }
        *held = true;
        drop(held);
        // 2. Exclude other processes.
        let fd = self.inner.fd.as_raw_fd();
        let r = if d.remaining().is_none() {
            sys::flock(fd, libc::LOCK_EX).map(|_| true)
        } else {
            let mut backoff = Duration::from_micros(20);
            loop {
                match sys::flock(fd, libc::LOCK_EX | libc::LOCK_NB) {
                    Ok(()) => break Ok(true),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        let rem = d.remaining().unwrap_or(backoff);
                        if rem.is_zero() {
                            break Ok(false);
                        }
                        std::thread::sleep(rem.min(backoff));
                        backoff = (backoff * 2).min(Duration::from_millis(5));
                    }
                    Err(e) => break Err(e),
                }
            }
        };
        if !matches!(r, Ok(true)) {
            *self.local() = false;
            self.inner.cv.notify_one();
        }
        Ok(r?)
    }

    /// Release; [`Error::NotLocked`] if this process does not hold it.
    pub fn release(&self) -> Result<()> {
        let mut held = self.local();
        if !*held {
            return Err(Error::NotLocked);
        }
        sys::flock(self.inner.fd.as_raw_fd(), libc::LOCK_UN)?;
        *held = false;
        drop(held);
        self.inner.cv.notify_one();
        Ok(())
    }
}

impl Serialize for Lock {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::Error as _;
        wire::share_fd(self.inner.fd.as_raw_fd())
            .map_err(S::Error::custom)?
            .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Lock {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        use serde::de::Error as _;
        let n = i32::deserialize(d)?;
        // A new open file description: flock ownership must not be shared with the parent.
        let fd = wire::adopt_fd(n, true).map_err(D::Error::custom)?;
        Ok(Lock::from_fd(fd))
    }
}

/// A re-entrant lock (Python's `RLock`): the holding thread may acquire it
/// again; it is released after as many `release` calls.
#[derive(Clone, Serialize, Deserialize)]
pub struct RLock {
    lock: Lock,
    #[serde(skip)]
    owner: Arc<Mutex<(Option<ThreadId>, usize)>>,
}

impl std::fmt::Debug for RLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RLock").finish()
    }
}

impl RLock {
    /// A new, unlocked re-entrant lock.
    pub fn new() -> Result<Self> {
        Ok(RLock {
            lock: Lock::new()?,
            owner: Arc::default(),
        })
    }

    fn owner(&self) -> MutexGuard<'_, (Option<ThreadId>, usize)> {
        self.owner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Acquire, blocking.
    pub fn acquire(&self) -> Result<()> {
        if self.acquire_timeout_opt(None)? {
            Ok(())
        } else {
            Err(Error::Timeout)
        }
    }

    /// Acquire within `timeout`; `Ok(false)` on timeout.
    pub fn acquire_timeout(&self, timeout: Duration) -> Result<bool> {
        self.acquire_timeout_opt(Some(timeout))
    }

    fn acquire_timeout_opt(&self, t: Option<Duration>) -> Result<bool> {
        let me = std::thread::current().id();
        {
            let mut o = self.owner();
            if o.0 == Some(me) {
                o.1 += 1;
                return Ok(true);
            }
        }
        let ok = match t {
            None => self.lock.acquire().map(|_| true)?,
            Some(t) => self.lock.acquire_timeout(t)?,
        };
        if ok {
            *self.owner() = (Some(me), 1);
        }
        Ok(ok)
    }

    /// Release once; [`Error::NotLocked`] if the calling thread does not own it.
    pub fn release(&self) -> Result<()> {
        let me = std::thread::current().id();
        let mut o = self.owner();
        if o.0 != Some(me) {
            return Err(Error::NotLocked);
        }
        o.1 -= 1;
        if o.1 == 0 {
            o.0 = None;
            drop(o);
            self.lock.release()?;
        }
        Ok(())
    }
}
