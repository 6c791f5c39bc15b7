//! When a request's first bytes reached this machine, as the kernel saw it.
//!
//! A server that stamps a request with its own clock after it wakes up
//! measures its own scheduling as much as the client: on a loaded 2-core
//! machine the server thread can get the CPU tens of milliseconds after the
//! bytes arrived, and two requests sent 250 ms apart were recorded 47 ms
//! apart. So the sockets ask the kernel to stamp every segment when it is
//! received (`SO_TIMESTAMPNS`) and the servers read with `recvmsg`, taking the
//! stamp from the control message. On loopback the stamp is taken while the
//! sender is still inside its `send` call, so it is the client's send time.
//!
//! The kernel stamps with `CLOCK_REALTIME`; records are on [`Instant`]s. Each
//! stamp is converted by its age when read (realtime now minus the stamp),
//! which a clock step or slew can only disturb by the drift over that age,
//! never by the drift since the server started.

use std::io;
use std::mem::{size_of, MaybeUninit};
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

/// Asks the kernel to stamp data arriving on `socket`. Set on a listener, it
/// is inherited by the sockets it accepts, so it covers bytes that arrive
/// before `accept` returns.
pub fn enable(socket: &impl AsRawFd) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: `on` outlives the call and its size is passed with it.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            (&on as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Enabling stamps on a first socket turns them on machine-wide, but the
/// kernel does it a moment later, from a work queue: segments received
/// meanwhile carry no stamp. Servers call this before they listen; it sends
/// bytes over loopback until they come back stamped (at most once per process).
pub fn ready() -> io::Result<()> {
    static READY: OnceLock<Result<(), String>> = OnceLock::new();
    READY
        .get_or_init(|| probe().map_err(|e| e.to_string()))
        .clone()
        .map_err(io::Error::other)
}

fn probe() -> io::Result<()> {
    let listener = std::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0))?;
    enable(&listener)?;
    let mut client = std::net::TcpStream::connect(listener.local_addr()?)?;
    let (server, _) = listener.accept()?;
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut buf = [MaybeUninit::uninit(); 16];
    while Instant::now() < deadline {
        std::io::Write::write_all(&mut client, b"x")?;
        std::thread::sleep(Duration::from_millis(1));
        match recv(server.as_raw_fd(), &mut buf) {
            Ok((_, Some(_))) => {
                // Closing the last stamped socket turns stamps off again
                // (also later, from the work queue); this one stays open so
                // that servers started and dropped one after another never
                // fall into that gap.
                std::mem::forget(listener);
                return Ok(());
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::other(
        "the kernel did not stamp received segments (SO_TIMESTAMPNS)",
    ))
}

/// One non-blocking `recvmsg` into `buf`: the bytes read and when the kernel
/// received them (the last segment read, as TCP reports it), if it said.
fn recv(fd: RawFd, buf: &mut [MaybeUninit<u8>]) -> io::Result<(usize, Option<Instant>)> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // Room for one timespec control message, aligned for `cmsghdr`.
    let mut control = [0u64; 8];
    // SAFETY: zeroed is a valid `msghdr` (null name, no iovecs); the fields
    // set below point at `iov` and `control`, which outlive the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = size_of::<[u64; 8]>() as _;
    // SAFETY: `msg` describes writable memory of the lengths given; the kernel
    // writes at most that much.
    let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut stamp = None;
    // SAFETY: the CMSG_* walk stays within `msg_controllen`, which the kernel
    // set to the bytes it wrote; a SCM_TIMESTAMPNS payload is one timespec,
    // read unaligned because CMSG_DATA promises no alignment for it.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_TIMESTAMPNS
            {
                let ts = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::timespec>());
                stamp = Some(to_instant(ts));
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    Ok((n as usize, stamp))
}

/// A `CLOCK_REALTIME` stamp as an [`Instant`], by its age now.
///
/// The age needs "now" on both clocks at one moment. Read back to back, the
/// two readings can still be apart by however long the thread was
/// descheduled between them (milliseconds on a loaded machine), which would
/// shift the arrival by as much. So the realtime clock is read on both sides
/// of the monotonic reading, and the reading is retried until the bracket is
/// tight (under 20 µs, or the tightest of 8 tries).
fn to_instant(ts: libc::timespec) -> Instant {
    let nanos = |t: &libc::timespec| i128::from(t.tv_sec) * 1_000_000_000 + i128::from(t.tv_nsec);
    let realtime = || {
        let mut now = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `now` is a valid timespec to write into.
        unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut now) };
        nanos(&now)
    };
    let mut best: Option<(i128, i128, Instant)> = None;
    for _ in 0..8 {
        let before = realtime();
        let here = Instant::now();
        let after = realtime();
        let width = after - before;
        if best.is_none_or(|(w, _, _)| width < w) {
            best = Some((width, before + width / 2, here));
        }
        if width < 20_000 {
            break;
        }
    }
    let (_, now, here) = best.expect("at least one reading");
    // A stamp "from the future" can only be a clock stepped back: age zero.
    let age = (now - nanos(&ts)).clamp(0, u64::MAX.into());
    here.checked_sub(Duration::from_nanos(age as u64))
        .unwrap_or(here)
}

/// Reads into `buf` from a stamped socket, waiting until data is there.
pub(crate) async fn read(stream: &TcpStream, buf: &mut [u8]) -> io::Result<(usize, Instant)> {
    let fd = stream.as_raw_fd();
    // SAFETY: initialised bytes may be viewed as `MaybeUninit`; `recv` only writes.
    let uninit = unsafe { &mut *(buf as *mut [u8] as *mut [MaybeUninit<u8>]) };
    let (n, stamp) = stream
        .async_io(Interest::READABLE, || recv(fd, uninit))
        .await?;
    Ok((n, stamp.unwrap_or_else(Instant::now)))
}

/// The arrival of a connection's next request: set by the first read after
/// the last one was taken, taken when the request is handled. HTTP/1 clients
/// send a request only after the last response, so "first bytes since the
/// last request" are the next request's first bytes.
#[derive(Clone, Debug, Default)]
pub(crate) struct NextArrival(Arc<Mutex<Option<Instant>>>);

impl NextArrival {
    fn note(&self, at: Instant) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert(at);
    }

    pub(crate) fn take(&self) -> Option<Instant> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// A TCP stream whose reads note request arrivals in a [`NextArrival`].
pub(crate) struct StampedStream {
    inner: TcpStream,
    arrival: NextArrival,
}

impl StampedStream {
    pub(crate) fn new(inner: TcpStream) -> (Self, NextArrival) {
        let arrival = NextArrival::default();
        (
            StampedStream {
                inner,
                arrival: arrival.clone(),
            },
            arrival,
        )
    }
}

impl AsyncRead for StampedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let fd = this.inner.as_raw_fd();
        loop {
            ready!(this.inner.poll_read_ready(cx))?;
            // SAFETY: `recv` only writes to the unfilled part, and exactly `n`
            // bytes of it are marked filled below.
            let unfilled = unsafe { buf.unfilled_mut() };
            match this.inner.try_io(Interest::READABLE, || recv(fd, unfilled)) {
                Ok((n, stamp)) => {
                    if n > 0 {
                        this.arrival.note(stamp.unwrap_or_else(Instant::now));
                    }
                    // SAFETY: the kernel wrote these `n` bytes.
                    unsafe { buf.assume_init(n) };
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for StampedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// The stamp is when the bytes arrived, not when they were read: read
    /// 300 ms after the send, it still says the send.
    #[tokio::test]
    async fn stamps_the_arrival_not_the_read() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        enable(&listener).unwrap();
        ready().unwrap();
        let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        server.set_nonblocking(true).unwrap();
        let server = TcpStream::from_std(server).unwrap();

        let before = Instant::now();
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        let after = Instant::now();
        std::thread::sleep(Duration::from_millis(300));
        let mut buf = [0u8; 64];
        let (n, at) = read(&server, &mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"GET / HTTP/1.1\r\n\r\n");
        // In 6,000 sends on loopback, quiet and with both cores busy, every
        // stamp fell between the instants before and after the `write` call;
        // the slack is only for reading the two clocks µs apart in `to_instant`.
        let slack = Duration::from_millis(1);
        assert!(
            at + slack >= before && at <= after + slack,
            "stamped {:?} after the send began, which took {:?}",
            at.saturating_duration_since(before),
            after - before
        );
    }
}
