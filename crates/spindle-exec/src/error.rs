//! Error types (Python's exception names noted where they map).

use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Arc;

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How a worker process ended when it was lost mid-task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// Killed by this signal number (SIGKILL, SIGABRT for abort/stack overflow/OOM abort, ...).
    Signal(i32),
    /// Exited on its own with this status (e.g. `std::process::exit` inside a task).
    Code(i32),
    /// The exit status could not be collected within the grace period.
    Unknown,
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exit::Signal(s) => write!(f, "killed by signal {s} ({})", crate::sys::signal_name(*s)),
            Exit::Code(c) => write!(f, "exited with code {c}"),
            Exit::Unknown => write!(f, "exited (status unknown)"),
        }
    }
}

/// A failure inside a worker, carried back to the caller (Python's
/// re-raised exception plus `RemoteTraceback`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct RemoteError {
    /// `"panic"`, `"encode"` (result could not be serialized) or `"decode"` (arguments could not be deserialized).
    pub kind: String,
    /// The panic message or serialization error.
    pub message: String,
    /// The backtrace captured in the worker at the panic site (may be empty).
    pub backtrace: String,
    /// Pid of the worker process (0 for a thread pool).
    pub pid: u32,
}

impl fmt::Display for RemoteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} in worker {}: {}", self.kind, self.pid, self.message)
    }
}

/// Every error this crate returns.
#[derive(Clone, Debug, thiserror::Error)]
pub enum Error {
    /// A blocking call's timeout elapsed (Python's `multiprocessing.TimeoutError`).
    #[error("timed out")]
    Timeout,
    /// `Queue::put` timed out because the queue is full (`queue.Full`).
    #[error("queue is full")]
    Full,
    /// `Queue::get` timed out because the queue is empty (`queue.Empty`).
    #[error("queue is empty")]
    Empty,
    /// The peer closed its end and everything sent was read (`EOFError`).
    #[error("end of file: the peer closed the connection")]
    Eof,
    /// The handle was closed (`ValueError` on a closed queue/connection).
    #[error("handle is closed")]
    Closed,
    /// Submission after `close`/`terminate` (`ValueError("Pool not running")`).
    #[error("pool not running")]
    PoolNotRunning,
    /// `join` before `close`/`terminate` (`ValueError("Pool is still running")`).
    #[error("pool is still running")]
    PoolRunning,
    /// A bad argument (`ValueError`).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// `start` called twice (`AssertionError`).
    #[error("process already started")]
    AlreadyStarted,
    /// Operation needs a started process.
    #[error("process not started")]
    NotStarted,
    /// `close` on a live process (`ValueError`).
    #[error("process is still running")]
    StillRunning,
    /// `successful()` before the result is ready (`ValueError`).
    #[error("result is not ready")]
    NotReady,
    /// The result was already taken by an earlier `get`.
    #[error("result was already taken")]
    AlreadyTaken,
    /// Releasing a lock that is not held (`ValueError`/`RuntimeError`).
    #[error("release of an unlocked lock")]
    NotLocked,
    /// The task panicked (or its arguments/result failed to (de)serialize) in the worker.
    #[error("task failed: {0}")]
    Remote(Box<RemoteError>),
    /// The worker process running the task died (killed, aborted, exited).
    #[error("worker process {pid} was lost while running the task: {exit}")]
    WorkerLost {
        /// Pid of the lost worker.
        pid: u32,
        /// How it ended.
        exit: Exit,
    },
    /// The pool was terminated before the task finished.
    #[error("pool was terminated before the task finished")]
    Terminated,
    /// A value could not be serialized in this process (`PicklingError`).
    #[error("could not serialize: {0}")]
    Encode(String),
    /// Bytes could not be deserialized in this process.
    #[error("could not deserialize: {0}")]
    Decode(String),
    /// A thread panicked; the payload's message.
    #[error("thread panicked: {0}")]
    ThreadPanic(String),
    /// A child process could not be started or spoke an unexpected protocol.
    #[error("worker protocol error: {0}")]
    Protocol(String),
    /// An operating-system error.
    #[error("I/O error: {0}")]
    Io(Arc<std::io::Error>),
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Io(Arc::new(e))
    }
}

pub(crate) fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "Box<dyn Any>".to_string()
    }
}
