//! # spindle-exec
//!
//! Python's `multiprocessing` and `threading`, in Rust, without Python's
//! hangs: [`Process`], [`Queue`], [`Pipe`](pipe()) / [`Connection`],
//! [`SharedMemory`], a crash-safe cross-process [`Lock`] / [`RLock`], a
//! process [`Pool`] and a [`ThreadPool`] with one API, and [`thread`]s that
//! join with their result or panic.
//!
//! ## The one line `main` needs
//!
//! Worker processes are the current executable re-run with a marker in the
//! environment (never a bare `fork` of a multithreaded program). Call
//! [`init`] first thing in `main`; in a worker it runs the worker and never
//! returns, otherwise it returns at once:
//!
//! ```no_run
//! fn main() {
//!     spindle_exec::init();
//!     // ... the program ...
//! }
//! ```
//!
//! Integration tests that start processes use `harness = false` and
//! [`testing::run_tests`], which calls `init()` for you.
//!
//! See `docs/exec.md` in the repository for the design, the choices of
//! crates, and the benchmark against Python.

#![warn(missing_docs)]
#![allow(clippy::needless_doctest_main)]

mod codec;
pub mod error;
pub mod lock;
pub mod pipe;
pub mod pool;
pub mod process;
pub mod queue;
pub mod result;
pub mod shmem;
mod sys;
pub mod testing;
pub mod thread;
pub mod thread_pool;
pub mod wire;
mod worker;

pub use error::{Error, Exit, RemoteError, Result};
pub use lock::{Lock, RLock};
pub use pipe::{pipe, Connection};
pub use pool::{Pool, PoolBuilder};
pub use process::{Process, ProcessTarget};
pub use queue::Queue;
pub use result::{AsyncResult, IMapIter, IMapUnorderedIter};
pub use shmem::{SharedArray, SharedMemory};
pub use thread::{spawn, spawn_run, JoinHandle, Run};
pub use thread_pool::ThreadPool;

/// Call first thing in `main`. In a worker process started by this crate it
/// runs the worker and exits (never returns); otherwise it returns at once.
pub fn init() {
    if let Ok(spec) = std::env::var(worker::ENV) {
        worker::child_main(&spec);
    }
}

/// Whether this process is a worker started by spindle-exec (only
/// observable inside task code).
pub fn is_worker() -> bool {
    std::env::args().nth(1).as_deref() == Some(worker::ARG)
}

/// Number of CPUs available (the default pool size).
pub fn cpu_count() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
