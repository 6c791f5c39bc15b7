//! Threads from a closure or from a type with a run method, joining with
//! the result or the panic (Python's `threading.Thread`, plus a result).

use crate::error::{panic_message, Error, Result};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc;
use std::time::Duration;

/// A type whose `run` method is a thread's body ("subclass `Thread` and
/// override `run`").
pub trait Run: Send + 'static {
    /// What `run` returns; handed to `join`.
    type Output: Send + 'static;
    /// The thread body.
    fn run(self) -> Self::Output;
}

/// Handle to a spawned thread.
pub struct JoinHandle<T> {
    rx: mpsc::Receiver<std::result::Result<T, String>>,
    handle: Option<std::thread::JoinHandle<()>>,
    name: Option<String>,
}

impl<T> std::fmt::Debug for JoinHandle<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinHandle")
            .field("name", &self.name)
            .finish()
    }
}

/// Start a thread running `f`.
pub fn spawn<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<JoinHandle<T>> {
    spawn_named(None, f)
}

/// Start a thread running `r.run()`.
pub fn spawn_run<R: Run>(r: R) -> Result<JoinHandle<R::Output>> {
    spawn_named(None, move || r.run())
}

/// Start a named thread running `f`.
pub fn spawn_named<T: Send + 'static>(
    name: Option<String>,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<JoinHandle<T>> {
    let (tx, rx) = mpsc::channel();
    let mut b = std::thread::Builder::new();
    if let Some(n) = &name {
        b = b.name(n.clone());
    }
    let handle = b.spawn(move || {
        let r = catch_unwind(AssertUnwindSafe(f)).map_err(|p| panic_message(&*p));
        let _ = tx.send(r);
    })?;
    Ok(JoinHandle {
        rx,
        handle: Some(handle),
        name,
    })
}

impl<T> JoinHandle<T> {
    /// Wait for the thread; its return value, or [`Error::ThreadPanic`].
    pub fn join(mut self) -> Result<T> {
        let r = self.rx.recv();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        match r {
            Ok(r) => r.map_err(Error::ThreadPanic),
            Err(_) => Err(Error::ThreadPanic("thread ended without a result".into())),
        }
    }

    /// Wait at most `timeout`; [`Error::Timeout`] leaves the thread running
    /// and the handle usable.
    pub fn join_timeout(&mut self, timeout: Duration) -> Result<T> {
        match self.rx.recv_timeout(timeout) {
            Ok(r) => {
                if let Some(h) = self.handle.take() {
                    let _ = h.join();
                }
                r.map_err(Error::ThreadPanic)
            }
            Err(mpsc::RecvTimeoutError::Timeout) => Err(Error::Timeout),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                Err(Error::ThreadPanic("thread ended without a result".into()))
            }
        }
    }

    /// Whether the thread is still running.
    pub fn is_alive(&self) -> bool {
        self.handle.as_ref().is_some_and(|h| !h.is_finished())
    }

    /// The thread's name, if any.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }
}
