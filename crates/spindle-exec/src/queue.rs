//! `Queue<T>`: a multi-producer, multi-consumer queue shared by processes.
//!
//! Built on a `SOCK_SEQPACKET` socketpair that every sharing process holds
//! both ends of: `put` sends a record on one end, `get` receives from the
//! other. The kernel delivers each record whole to exactly one reader, so
//! there is no lock and no feeder thread — a process killed in the middle
//! of `put` or `get` cannot corrupt the queue or leave it locked (unlike
//! Python's, whose docs warn about exactly that). Records above
//! [`crate::wire::SHM_THRESHOLD`] travel as a memfd passed with
//! `SCM_RIGHTS`. Capacity is the socket buffer; `put` blocks (or times out
//! with [`Error::Full`]) when it is full.

use crate::error::{Error, Result};
use crate::sys::{self, Deadline};
use crate::wire::{self, SHM_THRESHOLD};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::io;
use std::marker::PhantomData;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

struct Fds {
    put: OwnedFd,
    get: OwnedFd,
    closed: AtomicBool,
}

/// A process-shared FIFO queue (Python's `multiprocessing.Queue`).
///
/// Clone it to share within a process; pass it in [`crate::Process`]
/// arguments or a pool initializer to share it with children.
pub struct Queue<T> {
    fds: Arc<Fds>,
    _t: PhantomData<fn(T) -> T>,
}

impl<T> Clone for Queue<T> {
    fn clone(&self) -> Self {
        Queue {
            fds: Arc::clone(&self.fds),
            _t: PhantomData,
        }
    }
}

impl<T> std::fmt::Debug for Queue<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("fd", &self.fds.get.as_raw_fd())
            .finish()
    }
}

const TAG_INLINE: u8 = 0;
const TAG_MEMFD: u8 = 1;

impl<T: Serialize + DeserializeOwned> Queue<T> {
    /// A new, empty queue.
    pub fn new() -> Result<Self> {
        let (a, b) = sys::socketpair(libc::SOCK_SEQPACKET)?;
        // Make room for a few hundred small records (best effort).
        let size: libc::c_int = 4 << 20;
        for fd in [a.as_raw_fd(), b.as_raw_fd()] {
            // SAFETY: valid option pointer and length.
            unsafe {
                libc::setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    libc::SO_SNDBUF,
                    (&size as *const libc::c_int).cast(),
                    4,
                );
                libc::setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    libc::SO_RCVBUF,
                    (&size as *const libc::c_int).cast(),
                    4,
                );
            }
        }
        Ok(Queue {
            fds: Arc::new(Fds {
                put: a,
                get: b,
                closed: AtomicBool::new(false),
            }),
            _t: PhantomData,
        })
    }

    fn check_open(&self) -> Result<()> {
        if self.fds.closed.load(Ordering::Acquire) {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }

    /// Put, blocking while the queue is full.
    pub fn put(&self, item: &T) -> Result<()> {
        self.put_deadline(item, Deadline::never())
    }

    /// Put, waiting at most `timeout` for room ([`Error::Full`]).
    pub fn put_timeout(&self, item: &T, timeout: Duration) -> Result<()> {
        self.put_deadline(item, Deadline::after(Some(timeout)))
    }

    /// Put without waiting ([`Error::Full`]).
    pub fn put_nowait(&self, item: &T) -> Result<()> {
        self.put_timeout(item, Duration::ZERO)
    }

    fn put_deadline(&self, item: &T, d: Deadline) -> Result<()> {
        self.check_open()?;
        let body = wire::encode(item)?;
        let fd = self.fds.put.as_raw_fd();
        let (msg, memfd) = if body.len() > SHM_THRESHOLD {
            let m = sys::memfd("spindle-exec-queue")?;
            write_all_fd(m.as_raw_fd(), &body)?;
            let mut msg = vec![TAG_MEMFD];
            msg.extend_from_slice(&(body.len() as u64).to_le_bytes());
            (msg, Some(m))
        } else {
            let mut msg = Vec::with_capacity(body.len() + 1);
            msg.push(TAG_INLINE);
            msg.extend_from_slice(&body);
            (msg, None)
        };
        loop {
            match send_record(fd, &msg, memfd.as_ref().map(|m| m.as_raw_fd())) {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if !sys::poll_fd(fd, libc::POLLOUT, d)? {
                        return Err(Error::Full);
                    }
                    // A wakeup with no room left (another writer won): retry until the deadline.
                    if d.expired() {
                        match send_record(fd, &msg, memfd.as_ref().map(|m| m.as_raw_fd())) {
                            Ok(()) => return Ok(()),
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                                return Err(Error::Full)
                            }
                            Err(e) => return Err(e.into()),
                        }
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Get, blocking until an item arrives.
    pub fn get(&self) -> Result<T> {
        self.get_deadline(Deadline::never())
    }

    /// Get, waiting at most `timeout` ([`Error::Empty`]).
    pub fn get_timeout(&self, timeout: Duration) -> Result<T> {
        self.get_deadline(Deadline::after(Some(timeout)))
    }

    /// Get without waiting ([`Error::Empty`]).
    pub fn get_nowait(&self) -> Result<T> {
        self.get_timeout(Duration::ZERO)
    }

    fn get_deadline(&self, d: Deadline) -> Result<T> {
        self.check_open()?;
        let fd = self.fds.get.as_raw_fd();
        let mut buf = vec![0u8; SHM_THRESHOLD + 64];
        loop {
            match recv_record(fd, &mut buf) {
                Ok((n, passed)) => return decode_record(&buf[..n], passed),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if !sys::poll_fd(fd, libc::POLLIN, d)? {
                        return Err(Error::Empty);
                    }
                    if d.expired() {
                        return match recv_record(fd, &mut buf) {
                            Ok((n, passed)) => decode_record(&buf[..n], passed),
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Err(Error::Empty),
                            Err(e) => Err(e.into()),
                        };
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Whether the queue is (momentarily) empty.
    pub fn empty(&self) -> bool {
        !matches!(
            sys::poll_fd(
                self.fds.get.as_raw_fd(),
                libc::POLLIN,
                Deadline::after(Some(Duration::ZERO))
            ),
            Ok(true)
        )
    }

    /// Close this process's handle: further `put`/`get` through it (and its
    /// clones) return [`Error::Closed`]. Other processes are unaffected.
    pub fn close(&self) {
        self.fds.closed.store(true, Ordering::Release);
    }
}

fn decode_record<T: DeserializeOwned>(rec: &[u8], passed: Option<OwnedFd>) -> Result<T> {
    match rec.first() {
        Some(&TAG_INLINE) => wire::decode(&rec[1..]),
        Some(&TAG_MEMFD) if rec.len() >= 9 => {
            let mut l = [0u8; 8];
            l.copy_from_slice(&rec[1..9]);
            let len = u64::from_le_bytes(l) as usize;
            let fd = passed.ok_or_else(|| Error::Protocol("queue record lost its memfd".into()))?;
            let m = sys::Mapping::new(fd)?;
            if m.len() < len {
                return Err(Error::Protocol("queue memfd too short".into()));
            }
            // SAFETY: `len` bytes are mapped (checked above). The sender
            // created this memfd for this record, wrote it before sending,
            // and closes its fd after; the kernel gave us the only other
            // reference, so nothing writes these bytes while `s` lives.
            let s = unsafe { std::slice::from_raw_parts(m.as_ptr(), len) };
            wire::decode(s)
        }
        _ => Err(Error::Protocol("malformed queue record".into())),
    }
}

fn write_all_fd(fd: RawFd, mut b: &[u8]) -> io::Result<()> {
    while !b.is_empty() {
        // SAFETY: valid buffer.
        let r = unsafe { libc::write(fd, b.as_ptr().cast(), b.len()) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        b = &b[r as usize..];
    }
    Ok(())
}

/// Send one record (non-blocking), optionally passing one fd.
pub(crate) fn send_record(fd: RawFd, msg: &[u8], pass: Option<RawFd>) -> io::Result<()> {
    let mut iov = libc::iovec {
        iov_base: msg.as_ptr() as *mut libc::c_void,
        iov_len: msg.len(),
    };
    // SAFETY: CMSG_SPACE is a pure computation.
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) } as usize;
    let mut cbuf = vec![0u8; space];
    // SAFETY: msghdr is plain data; fields set below.
    let mut mh: libc::msghdr = unsafe { std::mem::zeroed() };
    mh.msg_iov = &mut iov;
    mh.msg_iovlen = 1;
    if let Some(p) = pass {
        mh.msg_control = cbuf.as_mut_ptr().cast();
        mh.msg_controllen = space as _;
        // SAFETY: the control buffer has room for one cmsg carrying one fd.
        unsafe {
            let c = libc::CMSG_FIRSTHDR(&mh);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as _;
            std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<RawFd>(), p);
        }
    }
    loop {
        // SAFETY: mh points to valid buffers.
        let r = unsafe { libc::sendmsg(fd, &mh, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) };
        if r >= 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Receive one record (non-blocking), with at most one passed fd.
pub(crate) fn recv_record(fd: RawFd, buf: &mut [u8]) -> io::Result<(usize, Option<OwnedFd>)> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: pure computation.
    let space = unsafe { libc::CMSG_SPACE((std::mem::size_of::<RawFd>() * 4) as u32) } as usize;
    let mut cbuf = vec![0u8; space];
    // SAFETY: plain data.
    let mut mh: libc::msghdr = unsafe { std::mem::zeroed() };
    mh.msg_iov = &mut iov;
    mh.msg_iovlen = 1;
    mh.msg_control = cbuf.as_mut_ptr().cast();
    mh.msg_controllen = space as _;
    let n = loop {
        // SAFETY: mh points to valid buffers.
        let r = unsafe { libc::recvmsg(fd, &mut mh, libc::MSG_DONTWAIT | libc::MSG_CMSG_CLOEXEC) };
        if r >= 0 {
            break r as usize;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    };
    let mut passed = None;
    // SAFETY: walking the control messages the kernel filled in.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&mh);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(c).cast::<RawFd>();
                let count = ((*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize)
                    / std::mem::size_of::<RawFd>();
                for k in 0..count {
                    let f = OwnedFd::from_raw_fd(std::ptr::read_unaligned(data.add(k)));
                    if passed.is_none() {
                        passed = Some(f);
                    }
                }
            }
            c = libc::CMSG_NXTHDR(&mh, c);
        }
    }
    if mh.msg_flags & libc::MSG_TRUNC != 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "queue record truncated",
        ));
    }
    Ok((n, passed))
}

impl<T> Serialize for Queue<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::Error as _;
        let a = wire::share_fd(self.fds.put.as_raw_fd()).map_err(S::Error::custom)?;
        let b = wire::share_fd(self.fds.get.as_raw_fd()).map_err(S::Error::custom)?;
        (a, b).serialize(s)
    }
}

impl<'de, T> Deserialize<'de> for Queue<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        use serde::de::Error as _;
        let (a, b) = <(i32, i32)>::deserialize(d)?;
        let put = wire::adopt_fd(a, false).map_err(D::Error::custom)?;
        let get = wire::adopt_fd(b, false).map_err(D::Error::custom)?;
        Ok(Queue {
            fds: Arc::new(Fds {
                put,
                get,
                closed: AtomicBool::new(false),
            }),
            _t: PhantomData,
        })
    }
}
