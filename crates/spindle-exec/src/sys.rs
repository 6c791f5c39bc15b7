//! Thin, safe wrappers over the few Linux system calls the crate needs.
//!
//! `libc` is used directly (rather than `nix`) to keep the dependency set
//! small; every wrapper retries on `EINTR` and returns `io::Result`.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

pub(crate) fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn cvt_ssize(r: libc::ssize_t) -> io::Result<usize> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

/// A point in time after which a blocking call gives up (`None` = never).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Deadline(Option<Instant>);

impl Deadline {
    pub(crate) fn after(timeout: Option<Duration>) -> Self {
        Deadline(timeout.map(|d| Instant::now().checked_add(d).unwrap_or_else(far_future)))
    }
    pub(crate) fn never() -> Self {
        Deadline(None)
    }
    /// Remaining time; `Some(ZERO)` once expired, `None` if unbounded.
    pub(crate) fn remaining(&self) -> Option<Duration> {
        self.0.map(|t| t.saturating_duration_since(Instant::now()))
    }
    pub(crate) fn expired(&self) -> bool {
        matches!(self.remaining(), Some(d) if d.is_zero())
    }
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86400 * 365 * 30)
}

pub(crate) fn socketpair(ty: libc::c_int) -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: fds is a valid 2-element array.
    cvt(unsafe { libc::socketpair(libc::AF_UNIX, ty | libc::SOCK_CLOEXEC, 0, fds.as_mut_ptr()) })?;
    // SAFETY: socketpair returned two fresh fds we now own.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

pub(crate) fn memfd(name: &str) -> io::Result<OwnedFd> {
    let cname =
        std::ffi::CString::new(name).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: valid NUL-terminated name.
    let fd = unsafe { libc::syscall(libc::SYS_memfd_create, cname.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fresh fd.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

pub(crate) fn ftruncate(fd: RawFd, len: usize) -> io::Result<()> {
    // SAFETY: plain syscall.
    cvt(unsafe { libc::ftruncate(fd, len as libc::off_t) }).map(drop)
}

pub(crate) fn fsize(fd: RawFd) -> io::Result<usize> {
    // SAFETY: `stat` is plain integers, for which all-zero is valid.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a valid, writable `stat`; a bad fd is an error return.
    cvt(unsafe { libc::fstat(fd, &mut st) })?;
    Ok(st.st_size as usize)
}

/// Duplicate `fd` with close-on-exec set.
pub(crate) fn dup_cloexec(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall; result is a fresh fd.
    let n = cvt(unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) })?;
    // SAFETY: `cvt` passed only a non-negative result: a new fd nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(n) })
}

/// Open a new open-file-description on the same file (`/proc/self/fd/N`).
pub(crate) fn reopen(fd: RawFd) -> io::Result<OwnedFd> {
    let path = std::ffi::CString::new(format!("/proc/self/fd/{fd}"))
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: valid path.
    let n = cvt(unsafe { libc::open(path.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) })?;
    // SAFETY: `cvt` passed only a non-negative result: a new fd nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(n) })
}

/// Wait until `fd` is ready for `events`; `Ok(false)` on timeout.
pub(crate) fn poll_fd(fd: RawFd, events: libc::c_short, deadline: Deadline) -> io::Result<bool> {
    loop {
        let ms = match deadline.remaining() {
            None => -1,
            Some(d) => {
                d.as_millis().min(i32::MAX as u128) as i32
                    + i32::from(d.subsec_nanos() % 1_000_000 != 0)
            }
        };
        let mut p = libc::pollfd {
            fd,
            events,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut p, 1, ms) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if r > 0 {
            return Ok(true);
        }
        if deadline.remaining().is_some_and(|d| d.is_zero()) {
            return Ok(false);
        }
    }
}

/// How long a link receiver busy-polls before sleeping in `poll(2)`
/// (`SPINDLE_EXEC_SPIN_US`, default 0: off). Trades a little CPU for
/// avoiding a scheduler wake-up on quick replies.
pub(crate) fn spin_budget() -> Duration {
    static SPIN: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();
    *SPIN.get_or_init(|| {
        let us = std::env::var("SPINDLE_EXEC_SPIN_US")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        Duration::from_micros(us)
    })
}

/// Busy-poll `fd` for readability for at most `budget`.
pub(crate) fn spin_readable(fd: RawFd, budget: Duration) -> bool {
    if budget.is_zero() {
        return false;
    }
    let t0 = Instant::now();
    loop {
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, zero timeout.
        if unsafe { libc::poll(&mut p, 1, 0) } > 0 {
            return true;
        }
        if t0.elapsed() >= budget {
            return false;
        }
        std::hint::spin_loop();
    }
}

pub(crate) fn send_all(fd: RawFd, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        // SAFETY: buf is valid for len bytes.
        let r = unsafe { libc::send(fd, buf.as_ptr().cast(), buf.len(), libc::MSG_NOSIGNAL) };
        match cvt_ssize(r) {
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Send `a` then `b` as one stream, in one `sendmsg` when the socket takes
/// it all (no copy of `b` into a joined buffer).
pub(crate) fn send_all2(fd: RawFd, mut a: &[u8], mut b: &[u8]) -> io::Result<()> {
    while !a.is_empty() {
        let mut iov = [
            libc::iovec {
                iov_base: a.as_ptr() as *mut libc::c_void,
                iov_len: a.len(),
            },
            libc::iovec {
                iov_base: b.as_ptr() as *mut libc::c_void,
                iov_len: b.len(),
            },
        ];
        // SAFETY: `msghdr` is plain data, all-zero is a valid empty header.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = iov.as_mut_ptr();
        msg.msg_iovlen = if b.is_empty() { 1 } else { 2 };
        // SAFETY: the iovecs point to live slices of their stated lengths,
        // which the kernel only reads.
        let r = unsafe { libc::sendmsg(fd, &msg, libc::MSG_NOSIGNAL) };
        match cvt_ssize(r) {
            Ok(n) if n < a.len() => a = &a[n..],
            Ok(n) => {
                b = &b[n - a.len()..];
                a = &[];
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    send_all(fd, b)
}

/// One `recv` into `buf` with `flags` (retried on `EINTR`); 0 means end-of-file.
pub(crate) fn recv_some(fd: RawFd, buf: &mut [u8], flags: libc::c_int) -> io::Result<usize> {
    loop {
        // SAFETY: buf is valid for len bytes.
        let r = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), flags) };
        match cvt_ssize(r) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            other => return other,
        }
    }
}

/// Read exactly `buf.len()` bytes. `UnexpectedEof` if the peer closed first.
pub(crate) fn recv_exact(fd: RawFd, mut buf: &mut [u8]) -> io::Result<()> {
    while !buf.is_empty() {
        // SAFETY: buf is valid for len bytes.
        let r = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
        match cvt_ssize(r) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => buf = &mut buf[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

pub(crate) fn flock(fd: RawFd, op: libc::c_int) -> io::Result<()> {
    loop {
        // SAFETY: plain syscall.
        match cvt(unsafe { libc::flock(fd, op) }) {
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

pub(crate) fn pidfd_open(pid: u32) -> Option<OwnedFd> {
    // SAFETY: plain syscall.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        None
    } else {
        // SAFETY: fresh fd (pidfds are close-on-exec by default).
        Some(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
    }
}

/// Wait for `child` to exit, bounded by `deadline`. `Ok(None)` on timeout.
pub(crate) fn wait_child(
    child: &mut Child,
    pidfd: Option<&OwnedFd>,
    deadline: Deadline,
) -> io::Result<Option<ExitStatus>> {
    let mut backoff = Duration::from_micros(100);
    loop {
        if let Some(st) = child.try_wait()? {
            return Ok(Some(st));
        }
        if deadline.expired() {
            return Ok(None);
        }
        match pidfd {
            Some(fd) => {
                poll_fd(fd.as_raw_fd(), libc::POLLIN, deadline)?;
            }
            None => {
                let d = deadline.remaining().map_or(backoff, |r| r.min(backoff));
                std::thread::sleep(d);
                backoff = (backoff * 2).min(Duration::from_millis(20));
            }
        }
    }
}

pub(crate) fn kill(pid: u32, sig: libc::c_int) -> io::Result<()> {
    // SAFETY: plain syscall.
    cvt(unsafe { libc::kill(pid as libc::pid_t, sig) }).map(drop)
}

/// Python's exit code: the exit status, or minus the signal number.
pub(crate) fn exitcode(st: &ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    match (st.code(), st.signal()) {
        (Some(c), _) => c,
        (None, Some(s)) => -s,
        _ => -1,
    }
}

pub(crate) fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGTERM => "SIGTERM",
        _ => "signal",
    }
}

/// A `MAP_SHARED` mapping of a memfd that can grow.
pub(crate) struct Mapping {
    pub(crate) fd: OwnedFd,
    ptr: *mut u8,
    len: usize,
}

// SAFETY: (Send) the raw pointer is what keeps `Mapping` from being `Send`
// automatically, but it points to an mmap region that belongs to this
// `Mapping` alone (not to a thread), and `munmap` in `Drop` may run on any
// thread.
unsafe impl Send for Mapping {}
// SAFETY: (Sync) through `&Mapping` one can only read `fd`, `len` and the
// pointer's value; everything that changes them (`refresh`, `ensure`, `Drop`)
// takes `&mut self`, so no `&Mapping` sees the mapping move or vanish. The
// bytes behind the pointer are another matter: `as_ptr` hands out a raw
// pointer, and each dereference is `unsafe` and argues its own discipline
// (`SharedMemory`: atomics of one width or a caller's contract; the pool
// link: one writer at a time, ordered by the frame protocol; queue records:
// a memfd no one else writes).
unsafe impl Sync for Mapping {}

impl Mapping {
    pub(crate) fn new(fd: OwnedFd) -> io::Result<Self> {
        let mut m = Mapping {
            fd,
            ptr: std::ptr::null_mut(),
            len: 0,
        };
        m.refresh()?;
        Ok(m)
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn as_ptr(&self) -> *mut u8 {
        if self.len == 0 {
            std::ptr::NonNull::dangling().as_ptr()
        } else {
            self.ptr
        }
    }

    fn unmap(&mut self) {
        if self.len > 0 {
            // SAFETY: ptr/len came from mmap.
            unsafe { libc::munmap(self.ptr.cast(), self.len) };
            self.len = 0;
            self.ptr = std::ptr::null_mut();
        }
    }

    /// Remap to the current size of the file.
    pub(crate) fn refresh(&mut self) -> io::Result<()> {
        let size = fsize(self.fd.as_raw_fd())?;
        if size == self.len {
            return Ok(());
        }
        self.unmap();
        if size == 0 {
            return Ok(());
        }
        // SAFETY: mapping a file we own with a size it has.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                self.fd.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        self.ptr = p.cast();
        self.len = size;
        Ok(())
    }

    /// Grow the file (never shrink) to at least `len` bytes and remap.
    pub(crate) fn ensure(&mut self, len: usize) -> io::Result<()> {
        if len <= self.len {
            return Ok(());
        }
        let cur = fsize(self.fd.as_raw_fd())?;
        if cur < len {
            let page = 4096;
            let want = len.div_ceil(page) * page;
            ftruncate(self.fd.as_raw_fd(), want)?;
        }
        self.refresh()
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        self.unmap();
    }
}
