//! Serialization (serde with the crate's own postcard-like format, see
//! `codec.rs`) and the framed parent↔worker link.
//!
//! A link is one `SOCK_STREAM` socketpair plus two memfd-backed shared
//! mappings (one per direction). Frames carry a 40-byte header; a body up to
//! [`SHM_THRESHOLD`] bytes follows inline on the socket, a larger body is
//! serialized straight into the sender's mapping and only the header travels
//! through the socket. At most one message per direction is outstanding
//! (strict request/response), so a mapping is never overwritten while the
//! peer still reads it.

use crate::codec;
use crate::error::{Error, Result};
use crate::sys::{self, Deadline, Mapping};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::cell::RefCell;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;

/// Bodies larger than this travel through shared memory.
pub const SHM_THRESHOLD: usize = 64 * 1024;

pub(crate) fn encode<T: Serialize + ?Sized>(v: &T) -> Result<Vec<u8>> {
    encode_with_capacity(v, 0)
}

/// [`encode`] into a buffer of `cap` bytes to start with (e.g. the size of
/// the previous chunk, so a chunk is not regrown and copied several times).
pub(crate) fn encode_with_capacity<T: Serialize + ?Sized>(v: &T, cap: usize) -> Result<Vec<u8>> {
    codec::to_vec(v, Vec::with_capacity(cap)).map_err(|e| Error::Encode(e.0))
}

/// Serialize `v` into `dst`; the number of bytes used, or `None` if `dst`
/// is too small or `v` cannot be serialized.
pub(crate) fn encode_into<T: Serialize + ?Sized>(v: &T, dst: &mut [u8]) -> Option<usize> {
    codec::to_slice(v, dst).ok()
}

pub(crate) fn decode<T: DeserializeOwned>(b: &[u8]) -> Result<T> {
    codec::from_slice(b).map_err(|e| Error::Decode(e.0))
}

// ---------------------------------------------------------------------------
// Handing OS handles (Queue, Connection, SharedMemory, Lock) to children.
//
// Like Python, handles are shared by inheritance: they may appear in the
// arguments of `Process` or of a pool initializer. Serializing them records
// the fd to keep open across exec; deserializing in the child adopts it.

thread_local! {
    static SHARE: RefCell<Option<Vec<RawFd>>> = const { RefCell::new(None) };
    static ADOPT: RefCell<Option<Vec<RawFd>>> = const { RefCell::new(None) };
}

/// Serialize `v`, collecting the fds of handles inside it.
pub(crate) fn encode_sharing<T: Serialize + ?Sized>(v: &T) -> Result<(Vec<u8>, Vec<RawFd>)> {
    SHARE.with(|s| *s.borrow_mut() = Some(Vec::new()));
    let r = encode(v);
    let fds = SHARE.with(|s| s.borrow_mut().take()).unwrap_or_default();
    r.map(|b| (b, fds))
}

/// Deserialize `b` in a child, adopting inherited handle fds; the inherited
/// originals are closed afterwards (each handle keeps its own duplicate).
pub(crate) fn decode_adopting<T: DeserializeOwned>(b: &[u8]) -> Result<T> {
    ADOPT.with(|s| *s.borrow_mut() = Some(Vec::new()));
    let r = decode(b);
    let fds = ADOPT.with(|s| s.borrow_mut().take()).unwrap_or_default();
    let mut fds = fds;
    fds.sort_unstable();
    fds.dedup();
    for fd in fds {
        // SAFETY: these are the inherited fd numbers that the handles just
        // deserialized registered; each handle owns a duplicate (or a
        // reopened file) instead, so nothing else owns or closes these.
        unsafe { libc::close(fd) };
    }
    r
}

/// Called by a handle's `Serialize`: register `fd` for inheritance.
pub(crate) fn share_fd(fd: RawFd) -> std::result::Result<i32, String> {
    SHARE.with(|s| match s.borrow_mut().as_mut() {
        Some(v) => {
            v.push(fd);
            Ok(fd)
        }
        None => Err(
            "spindle-exec handles (Queue, Connection, SharedMemory, Lock) can only be shared \
                     through inheritance: pass them in Process arguments or a pool initializer"
                .to_string(),
        ),
    })
}

/// Called by a handle's `Deserialize`: adopt inherited fd `n`.
/// `reopen` gives the handle its own open file description (needed for flock).
pub(crate) fn adopt_fd(n: i32, reopen: bool) -> std::result::Result<OwnedFd, String> {
    ADOPT.with(|s| match s.borrow_mut().as_mut() {
        Some(v) => {
            let fd = if reopen {
                sys::reopen(n)
            } else {
                sys::dup_cloexec(n)
            }
            .map_err(|e| format!("adopting inherited fd {n}: {e}"))?;
            v.push(n);
            Ok(fd)
        }
        None => Err(
            "handle deserialized outside of process start-up (handles travel only by inheritance)"
                .to_string(),
        ),
    })
}

// ---------------------------------------------------------------------------
// Frames.

pub(crate) const K_TASK: u32 = 1;
pub(crate) const K_RESULT: u32 = 2;
pub(crate) const K_ERROR: u32 = 3;
pub(crate) const K_SHUTDOWN: u32 = 4;
pub(crate) const K_INIT: u32 = 5;
pub(crate) const K_ACK: u32 = 6;
/// Wakes a pool supervisor parked reading its idle worker's socket: the
/// worker answers `K_PONG` at once.
pub(crate) const K_PING: u32 = 7;
pub(crate) const K_PONG: u32 = 8;

/// `a` of a `K_RESULT` frame whose body is a plain `Vec<R>` (every item
/// succeeded); 0 means `Vec<Result<R, RemoteError>>`.
pub(crate) const RESULT_PLAIN: i64 = 1;

const F_SHM: u32 = 1;
const HDR: usize = 40;
const MAGIC: u32 = 0x5350_4e44; // "SPND"

#[derive(Clone, Copy, Debug)]
pub(crate) struct Header {
    pub kind: u32,
    flags: u32,
    len: u64,
    pub a: i64,
    pub b: i64,
}

impl Header {
    fn to_bytes(self) -> [u8; HDR] {
        let mut h = [0u8; HDR];
        h[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        h[4..8].copy_from_slice(&self.kind.to_le_bytes());
        h[8..12].copy_from_slice(&self.flags.to_le_bytes());
        h[16..24].copy_from_slice(&self.len.to_le_bytes());
        h[24..32].copy_from_slice(&self.a.to_le_bytes());
        h[32..40].copy_from_slice(&self.b.to_le_bytes());
        h
    }
    fn from_bytes(h: &[u8; HDR]) -> io::Result<Self> {
        let u32_at = |i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
        let u64_at = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&h[i..i + 8]);
            u64::from_le_bytes(b)
        };
        if u32_at(0) != MAGIC {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "bad frame magic",
            ));
        }
        Ok(Header {
            kind: u32_at(4),
            flags: u32_at(8),
            len: u64_at(16),
            a: u64_at(24) as i64,
            b: u64_at(32) as i64,
        })
    }
}

/// The sending half: socket fd plus this side's outgoing mapping.
pub(crate) struct Tx {
    pub(crate) map: Mapping,
    /// Reused serialization buffer of [`Tx::send_value`] (no allocation,
    /// regrowth or fresh-page faults per reply).
    scratch: Vec<u8>,
}

/// Where the body of the last received frame is.
#[derive(Clone, Copy)]
enum Body {
    /// In the peer's shared mapping, this many bytes.
    Shm(usize),
    /// In `Rx::buf[start..start + len]`.
    Inline(usize, usize),
}

/// The receiving half: this side's view of the peer's mapping, plus a
/// receive buffer: one `recv` usually brings header and body together.
pub(crate) struct Rx {
    pub(crate) map: Mapping,
    /// Received bytes; `buf[..pos]` is the last frame (its body may still be
    /// borrowed), `buf[pos..end]` bytes of the next one already read.
    buf: Vec<u8>,
    pos: usize,
    end: usize,
    last: Option<Body>,
}

/// Size of the receive buffer: a header plus the largest inline body.
const RXBUF: usize = HDR + SHM_THRESHOLD;

/// A parent↔worker link.
pub(crate) struct Link {
    /// Shared so that a pool submitter can write a task frame straight to
    /// an idle worker (see `pool.rs`) without the fd closing under it.
    pub(crate) sock: Arc<OwnedFd>,
    pub(crate) tx: Tx,
    pub(crate) rx: Rx,
}

impl Link {
    pub(crate) fn new(sock: OwnedFd, tx: OwnedFd, rx: OwnedFd) -> io::Result<Self> {
        Ok(Link {
            sock: Arc::new(sock),
            tx: Tx {
                map: Mapping::new(tx)?,
                scratch: Vec::new(),
            },
            rx: Rx {
                map: Mapping::new(rx)?,
                buf: Vec::new(),
                pos: 0,
                end: 0,
                last: None,
            },
        })
    }

    pub(crate) fn send_raw(&mut self, kind: u32, a: i64, b: i64, body: &[u8]) -> Result<()> {
        self.tx.send_raw(self.sock.as_raw_fd(), kind, a, b, body)
    }

    /// Receive one frame; the body is available via [`Rx::body`] until the next receive.
    pub(crate) fn recv(&mut self, deadline: Deadline) -> Result<Header> {
        self.rx.recv(self.sock.as_raw_fd(), deadline)
    }
}

/// Write a frame with an inline body (at most [`SHM_THRESHOLD`] bytes) on
/// `fd`, without touching any mapping: what a pool submitter uses to hand a
/// task straight to an idle worker.
pub(crate) fn send_inline(fd: RawFd, kind: u32, a: i64, b: i64, body: &[u8]) -> Result<()> {
    debug_assert!(body.len() <= SHM_THRESHOLD);
    let h = Header {
        kind,
        flags: 0,
        len: body.len() as u64,
        a,
        b,
    };
    sys::send_all2(fd, &h.to_bytes(), body)?;
    Ok(())
}

impl Tx {
    pub(crate) fn send_raw(
        &mut self,
        fd: RawFd,
        kind: u32,
        a: i64,
        b: i64,
        body: &[u8],
    ) -> Result<()> {
        if body.len() > SHM_THRESHOLD {
            self.map.ensure(body.len())?;
            // SAFETY: `ensure` made the mapping at least body.len() bytes.
            // The peer reads our mapping only between receiving a header and
            // sending its next frame, and we send only after receiving that
            // frame (at most one frame outstanding per direction: the rule
            // that pool.rs's pipelining keeps), so nobody reads it now.
            unsafe { std::ptr::copy_nonoverlapping(body.as_ptr(), self.map.as_ptr(), body.len()) };
            let h = Header {
                kind,
                flags: F_SHM,
                len: body.len() as u64,
                a,
                b,
            };
            sys::send_all(fd, &h.to_bytes())?;
        } else {
            // Header and body in one `sendmsg`, without copying the body.
            send_inline(fd, kind, a, b, body)?;
        }
        Ok(())
    }

    pub(crate) fn send_value<T: Serialize + ?Sized>(
        &mut self,
        fd: RawFd,
        kind: u32,
        a: i64,
        b: i64,
        v: &T,
    ) -> Result<()> {
        // Fast path: serialize straight into the shared mapping (one copy).
        if self.map.len() > SHM_THRESHOLD {
            // SAFETY: the mapping is `len()` bytes, and this `Tx` is its only
            // writer; as in `send_raw`, the peer is not reading it now, so
            // nothing else accesses it while `dst` lives.
            let dst = unsafe { std::slice::from_raw_parts_mut(self.map.as_ptr(), self.map.len()) };
            if let Some(n) = encode_into(v, dst) {
                if n > SHM_THRESHOLD {
                    let h = Header {
                        kind,
                        flags: F_SHM,
                        len: n as u64,
                        a,
                        b,
                    };
                    sys::send_all(fd, &h.to_bytes())?;
                    return Ok(());
                }
                let body = dst[..n].to_vec();
                return self.send_raw(fd, kind, a, b, &body);
            }
        }
        // Serialize after room for the header, so a small frame goes out
        // in one `send` without another copy, into the reused buffer.
        let mut buf = std::mem::take(&mut self.scratch);
        buf.clear();
        buf.resize(HDR, 0);
        let mut buf = codec::to_vec(v, buf).map_err(|e| Error::Encode(e.0))?;
        let n = buf.len() - HDR;
        let r = if n > SHM_THRESHOLD {
            self.send_raw(fd, kind, a, b, &buf[HDR..])
        } else {
            let h = Header {
                kind,
                flags: 0,
                len: n as u64,
                a,
                b,
            };
            buf[..HDR].copy_from_slice(&h.to_bytes());
            sys::send_all(fd, &buf).map_err(Error::from)
        };
        // Keep a buffer of ordinary size for the next reply (a one-off huge
        // one would otherwise stay allocated).
        if buf.capacity() <= 4 * RXBUF {
            self.scratch = buf;
        }
        r
    }
}

impl Rx {
    /// Body of the last received frame.
    pub(crate) fn body(&self) -> &[u8] {
        match self.last {
            // SAFETY: `recv` checked that the mapping holds `len` bytes. The
            // peer wrote them before sending the header and writes its
            // mapping again only after we send our next frame. Every caller
            // is done with the slice before sending: the parent's pool loop
            // decodes the reply before its next send unless the reply was in
            // our own buffer (`body_is_shared`), and the worker's
            // `pool_tramp` decodes its chunk before running it.
            Some(Body::Shm(len)) => unsafe { std::slice::from_raw_parts(self.map.as_ptr(), len) },
            Some(Body::Inline(start, len)) => &self.buf[start..start + len],
            None => &[],
        }
    }

    /// Whether the last body lives in the peer's shared mapping (valid only
    /// until the peer sends again) rather than in our own buffer.
    pub(crate) fn body_is_shared(&self) -> bool {
        matches!(self.last, Some(Body::Shm(_)))
    }

    /// Read more bytes into `buf[end..]`, waiting until `deadline`.
    /// `Ok(false)` on timeout.
    fn fill(&mut self, fd: RawFd, deadline: Deadline) -> Result<bool> {
        let spin = sys::spin_budget();
        let unbounded = deadline.remaining().is_none() && spin.is_zero();
        loop {
            let dst = &mut self.buf[self.end..];
            // Unbounded wait: block in `recv` itself (no `poll` first, one
            // system call instead of two). Otherwise try without blocking
            // and wait in `poll`, which honours the deadline.
            let flags = if unbounded { 0 } else { libc::MSG_DONTWAIT };
            match sys::recv_some(fd, dst, flags) {
                Ok(0) => return Err(Error::Eof),
                Ok(n) => {
                    self.end += n;
                    return Ok(true);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if !sys::spin_readable(fd, spin) && !sys::poll_fd(fd, libc::POLLIN, deadline)? {
                        return Err(Error::Timeout);
                    }
                }
                Err(e) => return Err(map_eof(e)),
            }
        }
    }

    pub(crate) fn recv(&mut self, fd: RawFd, deadline: Deadline) -> Result<Header> {
        if self.buf.len() < RXBUF {
            self.buf.resize(RXBUF, 0);
        }
        // Drop the previous frame; keep bytes of the next one already read.
        if self.pos > 0 {
            self.buf.copy_within(self.pos..self.end, 0);
            self.end -= self.pos;
            self.pos = 0;
        }
        self.last = None;
        while self.end < HDR {
            self.fill(fd, deadline)?;
        }
        let mut hb = [0u8; HDR];
        hb.copy_from_slice(&self.buf[..HDR]);
        let h = Header::from_bytes(&hb)?;
        let len = usize::try_from(h.len).map_err(|_| Error::Protocol("frame too large".into()))?;
        if h.flags & F_SHM != 0 {
            if self.map.len() < len {
                self.map.refresh()?;
            }
            if self.map.len() < len {
                return Err(Error::Protocol(
                    "shared-memory frame exceeds mapping".into(),
                ));
            }
            self.pos = HDR;
            self.last = Some(Body::Shm(len));
        } else {
            if len > SHM_THRESHOLD {
                return Err(Error::Protocol("inline frame too large".into()));
            }
            while self.end < HDR + len {
                self.fill(fd, deadline)?;
            }
            self.pos = HDR + len;
            self.last = Some(Body::Inline(HDR, len));
        }
        Ok(h)
    }
}

fn map_eof(e: io::Error) -> Error {
    if e.kind() == io::ErrorKind::UnexpectedEof || e.kind() == io::ErrorKind::ConnectionReset {
        Error::Eof
    } else {
        Error::from(e)
    }
}
