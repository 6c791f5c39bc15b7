//! `Pipe`: a pair of connected [`Connection`]s (Python's `multiprocessing.Pipe`).
//!
//! A Unix stream socketpair with length-prefixed messages. A stream has no
//! message-size limit, and Linux socket streaming runs at several GB/s (see
//! the reference figures), so payloads are not diverted through shared
//! memory here (per-message memfds were measured slower than copying); the
//! pool's link uses pre-mapped shared memory instead.

use crate::error::{Error, Result};
use crate::sys::{self, Deadline};
use crate::wire;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Mutex;
use std::time::Duration;

/// One end of a pipe.
pub struct Connection {
    fd: Option<OwnedFd>,
    readable: bool,
    writable: bool,
    rlock: Mutex<()>,
    wlock: Mutex<()>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("readable", &self.readable)
            .field("writable", &self.writable)
            .finish()
    }
}

/// A connected pair. `duplex = false` gives `(reader, writer)`, like Python.
pub fn pipe(duplex: bool) -> Result<(Connection, Connection)> {
    let (a, b) = sys::socketpair(libc::SOCK_STREAM)?;
    if duplex {
        Ok((
            Connection::new(a, true, true),
            Connection::new(b, true, true),
        ))
    } else {
        // SAFETY: plain syscalls on fds we own.
        unsafe {
            libc::shutdown(a.as_raw_fd(), libc::SHUT_WR);
            libc::shutdown(b.as_raw_fd(), libc::SHUT_RD);
        }
        Ok((
            Connection::new(a, true, false),
            Connection::new(b, false, true),
        ))
    }
}

impl Connection {
    fn new(fd: OwnedFd, readable: bool, writable: bool) -> Self {
        Connection {
            fd: Some(fd),
            readable,
            writable,
            rlock: Mutex::new(()),
            wlock: Mutex::new(()),
        }
    }

    fn fd(&self) -> Result<i32> {
        self.fd.as_ref().map(|f| f.as_raw_fd()).ok_or(Error::Closed)
    }

    /// Send a serializable value.
    pub fn send<T: Serialize + ?Sized>(&self, v: &T) -> Result<()> {
        self.send_bytes(&wire::encode(v)?)
    }

    /// Send raw bytes as one message.
    pub fn send_bytes(&self, b: &[u8]) -> Result<()> {
        let fd = self.fd()?;
        if !self.writable {
            return Err(Error::InvalidArgument("connection is read-only".into()));
        }
        let _g = self.wlock.lock().unwrap_or_else(|p| p.into_inner());
        sys::send_all(fd, &(b.len() as u64).to_le_bytes()).map_err(broken)?;
        sys::send_all(fd, b).map_err(broken)?;
        Ok(())
    }

    /// Receive a value, blocking ([`Error::Eof`] once the peer is gone and drained).
    pub fn recv<T: DeserializeOwned>(&self) -> Result<T> {
        wire::decode(&self.recv_bytes()?)
    }

    /// Receive a value, waiting at most `timeout` ([`Error::Timeout`]).
    pub fn recv_timeout<T: DeserializeOwned>(&self, timeout: Duration) -> Result<T> {
        wire::decode(&self.recv_bytes_timeout(timeout)?)
    }

    /// Receive one message's bytes, blocking.
    pub fn recv_bytes(&self) -> Result<Vec<u8>> {
        self.recv_deadline(Deadline::never())
    }

    /// Receive one message's bytes, waiting at most `timeout`.
    pub fn recv_bytes_timeout(&self, timeout: Duration) -> Result<Vec<u8>> {
        self.recv_deadline(Deadline::after(Some(timeout)))
    }

    fn recv_deadline(&self, d: Deadline) -> Result<Vec<u8>> {
        let fd = self.fd()?;
        if !self.readable {
            return Err(Error::InvalidArgument("connection is write-only".into()));
        }
        let _g = self.rlock.lock().unwrap_or_else(|p| p.into_inner());
        if !sys::poll_fd(fd, libc::POLLIN, d)? {
            return Err(Error::Timeout);
        }
        let mut l = [0u8; 8];
        sys::recv_exact(fd, &mut l).map_err(eof)?;
        let len = usize::try_from(u64::from_le_bytes(l))
            .map_err(|_| Error::Protocol("message too large".into()))?;
        let mut buf = vec![0u8; len];
        sys::recv_exact(fd, &mut buf).map_err(eof)?;
        Ok(buf)
    }

    /// Whether data (or end-of-file) is available within `timeout`.
    pub fn poll(&self, timeout: Duration) -> Result<bool> {
        let fd = self.fd()?;
        Ok(sys::poll_fd(
            fd,
            libc::POLLIN,
            Deadline::after(Some(timeout)),
        )?)
    }

    /// Close this end (the peer then sees end-of-file). Later calls return [`Error::Closed`].
    pub fn close(&mut self) {
        self.fd = None;
    }
}

fn eof(e: io::Error) -> Error {
    if e.kind() == io::ErrorKind::UnexpectedEof || e.kind() == io::ErrorKind::ConnectionReset {
        Error::Eof
    } else {
        e.into()
    }
}

fn broken(e: io::Error) -> Error {
    if e.kind() == io::ErrorKind::BrokenPipe {
        Error::Eof
    } else {
        e.into()
    }
}

impl Serialize for Connection {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::Error as _;
        let fd = self.fd().map_err(S::Error::custom)?;
        let n = wire::share_fd(fd).map_err(S::Error::custom)?;
        (n, self.readable, self.writable).serialize(s)
    }
}

impl<'de> Deserialize<'de> for Connection {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        use serde::de::Error as _;
        let (n, r, w) = <(i32, bool, bool)>::deserialize(d)?;
        let fd = wire::adopt_fd(n, false).map_err(D::Error::custom)?;
        Ok(Connection::new(fd, r, w))
    }
}
