//! The send gate at the socket: a connection's byte stream that holds the
//! first write of each request until its slot's gate lets it go, and tells
//! the gate when the bytes really left.
//!
//! Passing the gate in the download task and then handing the request to
//! the HTTP client leaves a window (the client's connection task, the
//! runtime, the kernel's scheduler) in which a starved process can lose
//! milliseconds. Two requests spaced by the gate could then reach the server
//! closer than the delay: measured with both cores busy, 5.8 ms closer
//! (`scripts/stress-timing.sh`). Here nothing sits between the gate and the
//! `write` system call, and the gate counts the next gap from the moment
//! the write returned, so preemption anywhere only makes gaps longer.
//!
//! The stream sits under TLS, so the gate sees the bytes the kernel gets.
//! HTTP/1.1 sends one request at a time on a connection, so "the next write
//! after arming" is the start of the request the connection was armed for.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::gate::{monotonic_nanos, Claim};
use super::slot::Pacing;

/// Where the pool leaves the pacing of the request about to be sent on a
/// connection; the connection's stream takes it at its next write, and
/// notes when that write went out.
#[derive(Default)]
pub struct Arming(Mutex<ArmState>);

#[derive(Default)]
struct ArmState {
    /// The next write starts a request; with its pacing, if it has one.
    next: Option<Option<Pacing>>,
    /// When the armed request's first write returned.
    sent: Option<Instant>,
}

impl Arming {
    /// The next write on this connection starts a request, which passes
    /// `pacing`'s gate if it has one.
    pub fn arm(&self, pacing: Option<Pacing>) {
        let mut state = self.0.lock().expect("arming");
        state.next = Some(pacing);
        state.sent = None;
    }

    /// Nothing is armed (the connection goes back to the pool).
    pub fn disarm(&self) {
        self.0.lock().expect("arming").next = None;
    }

    /// When the armed request's first bytes were written, once they were:
    /// latencies count from here, not from before the gate's wait.
    pub fn sent_at(&self) -> Option<Instant> {
        self.0.lock().expect("arming").sent
    }

    fn take(&self) -> Option<Option<Pacing>> {
        self.0.lock().expect("arming").next.take()
    }

    fn wrote(&self) {
        self.0.lock().expect("arming").sent = Some(Instant::now());
    }
}

/// A byte stream whose request writes pass their slot's gate.
pub struct GatedStream<T> {
    io: T,
    arming: Arc<Arming>,
    /// The request whose first write is pending: its pacing, if any, and
    /// its claim on the gate once made.
    current: Option<(Option<Pacing>, Option<Claim>)>,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<T> GatedStream<T> {
    /// Wraps `io`; the pool arms it through `arming`.
    pub fn new(io: T, arming: Arc<Arming>) -> Self {
        GatedStream {
            io,
            arming,
            current: None,
            sleep: None,
        }
    }

    /// Ready once this write may go: no pacing, or its gate claimed.
    fn poll_gate(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.current.is_none() {
            self.current = self.arming.take().map(|p| (p, None));
        }
        let Some((Some(pacing), claim)) = &mut self.current else {
            return Poll::Ready(());
        };
        while claim.is_none() {
            match pacing.gate.try_claim(pacing.gap, pacing.floor) {
                Ok(c) => {
                    *claim = Some(c);
                    self.sleep = None;
                }
                Err(until) => {
                    let wait = Duration::from_nanos(until.saturating_sub(monotonic_nanos()));
                    let deadline = tokio::time::Instant::now() + wait;
                    let sleep = self
                        .sleep
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                    sleep.as_mut().reset(deadline);
                    if sleep.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                }
            }
        }
        Poll::Ready(())
    }

    /// The write went out: the gate counts the next gap from now.
    fn wrote(&mut self, result: &Poll<io::Result<usize>>) {
        if let Poll::Ready(Ok(n)) = result {
            if *n > 0 {
                if let Some((pacing, claim)) = self.current.take() {
                    if let (Some(pacing), Some(claim)) = (pacing, claim) {
                        pacing.gate.commit(claim, pacing.gap, pacing.floor);
                    }
                    self.arming.wrote();
                }
            }
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for GatedStream<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for GatedStream<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.poll_gate(cx).is_pending() {
            return Poll::Pending;
        }
        let result = Pin::new(&mut self.io).poll_write(cx, buf);
        self.wrote(&result);
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.poll_gate(cx).is_pending() {
            return Poll::Pending;
        }
        let result = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.wrote(&result);
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::downloader::gate::SendGate;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn armed_writes_are_spaced_by_the_gap_and_unarmed_ones_are_not() {
        let gate = SendGate::default();
        let pacing = Pacing {
            gate: gate.clone(),
            gap: Duration::from_millis(80),
            floor: Duration::from_millis(80),
        };
        let (client, mut server) = tokio::io::duplex(1 << 16);
        let arming = Arc::new(Arming::default());
        let mut stream = GatedStream::new(client, arming.clone());
        let t0 = std::time::Instant::now();
        for _ in 0..3 {
            arming.arm(Some(pacing.clone()));
            stream.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
            // The rest of a request (its body) is not held again.
            stream.write_all(b"body").await.unwrap();
        }
        let gated = t0.elapsed();
        assert!(gated >= Duration::from_millis(160), "{gated:?}");
        assert!(gate.min_gap().unwrap() >= Duration::from_millis(80));
        // The last armed send holds the gate for an hour: an unarmed write
        // neither waits for it nor moves it.
        arming.arm(Some(Pacing {
            gate: gate.clone(),
            gap: Duration::from_secs(3600),
            floor: Duration::from_secs(3600),
        }));
        stream.write_all(b"x").await.unwrap();
        let before = gate.try_claim(Duration::ZERO, Duration::ZERO).unwrap_err();
        let unarmed = stream.write_all(b"unarmed");
        tokio::time::timeout(Duration::from_secs(30), unarmed)
            .await
            .expect("an unarmed write does not wait")
            .unwrap();
        assert_eq!(
            gate.try_claim(Duration::ZERO, Duration::ZERO).unwrap_err(),
            before
        );
        drop(stream);
        let mut all = Vec::new();
        server.read_to_end(&mut all).await.unwrap();
        assert_eq!(all.len(), 3 * 22 + 1 + 7);
    }
}
