//! `Process`: run a function, or a type's `run` method, in a child process.

use crate::error::{Error, Result};
use crate::sys::{self, Deadline};
use crate::wire::{self, K_TASK};
use crate::worker::{self, ProcTramp};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::os::fd::{OwnedFd, RawFd};
use std::process::Child;
use std::time::Duration;

/// A type whose `run` method is the body of a process — Python's "subclass
/// `Process` and override `run`". The value is serialized to the child.
pub trait ProcessTarget: Serialize + DeserializeOwned + Send + 'static {
    /// Runs in the child. Returning exits with code 0; a panic exits with 1;
    /// `std::process::exit(n)` exits with `n`.
    fn run(self);
}

type Encoder = Box<dyn FnOnce() -> Result<(Vec<u8>, Vec<RawFd>)> + Send>;

enum State {
    Created {
        tramp: i64,
        func: i64,
        encode: Encoder,
    },
    Started {
        child: Child,
        pidfd: Option<OwnedFd>,
    },
    Exited {
        code: i32,
    },
    Closed,
}

/// A child process running a function or a [`ProcessTarget`].
///
/// Like Python's `multiprocessing.Process`: create, [`start`](Process::start),
/// [`join`](Process::join); [`exitcode`](Process::exitcode) is `None` while
/// running, `0` on success, `n` after `std::process::exit(n)`, `1` after a
/// panic, `-N` when killed by signal `N`. Dropping a `Process` does not kill
/// the child (as in Python); the child dies with the parent process.
pub struct Process {
    state: State,
    pid: Option<u32>,
}

impl std::fmt::Debug for Process {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Process").field("pid", &self.pid).finish()
    }
}

impl Process {
    /// A process that will run `f(args)`. `args` may contain handles
    /// ([`crate::Queue`], [`crate::Connection`], [`crate::SharedMemory`],
    /// [`crate::Lock`]); they are inherited by the child, and the parent's
    /// copies are dropped once the child has started.
    pub fn new<A>(f: fn(A), args: A) -> Process
    where
        A: Serialize + DeserializeOwned + Send + 'static,
    {
        let encode: Encoder = Box::new(move || {
            let r = wire::encode_sharing(&args);
            // args dropped after the spawn (see start), keeping the fds valid meanwhile
            KEEP.with(|k| k.borrow_mut().push(Box::new(args)));
            r
        });
        Process {
            state: State::Created {
                tramp: worker::fn_offset(worker::proc_tramp::<A> as ProcTramp as usize),
                func: worker::fn_offset(f as usize),
                encode,
            },
            pid: None,
        }
    }

    /// A process that will call `target.run()`.
    pub fn from_target<T: ProcessTarget>(target: T) -> Process {
        let encode: Encoder = Box::new(move || {
            let r = wire::encode_sharing(&target);
            KEEP.with(|k| k.borrow_mut().push(Box::new(target)));
            r
        });
        Process {
            state: State::Created {
                tramp: worker::fn_offset(worker::target_tramp::<T> as ProcTramp as usize),
                func: 0,
                encode,
            },
            pid: None,
        }
    }

    /// `new` followed by `start`.
    pub fn spawn<A>(f: fn(A), args: A) -> Result<Process>
    where
        A: Serialize + DeserializeOwned + Send + 'static,
    {
        let mut p = Process::new(f, args);
        p.start()?;
        Ok(p)
    }

    /// Start the child. A second call returns [`Error::AlreadyStarted`].
    pub fn start(&mut self) -> Result<()> {
        let State::Created { .. } = self.state else {
            return Err(Error::AlreadyStarted);
        };
        let State::Created {
            tramp,
            func,
            encode,
        } = std::mem::replace(&mut self.state, State::Closed)
        else {
            return Err(Error::AlreadyStarted);
        };
        let result = (|| {
            let (body, fds) = encode()?;
            let mut w = worker::spawn_worker("proc", &fds)?;
            w.link.send_raw(K_TASK, tramp, func, &body)?;
            Ok::<_, Error>(w)
        })();
        // Drop the parent's copies of handles passed to the child.
        KEEP.with(|k| k.borrow_mut().clear());
        let w = result?;
        self.pid = Some(w.pid);
        self.state = State::Started {
            child: w.child,
            pidfd: w.pidfd,
        };
        Ok(())
    }

    /// The child's pid; `None` before `start`.
    pub fn pid(&self) -> Option<u32> {
        self.pid
    }

    fn poll_exit(&mut self, deadline: Deadline) -> Result<Option<i32>> {
        match &mut self.state {
            State::Created { .. } => Err(Error::NotStarted),
            State::Closed => Err(Error::Closed),
            State::Exited { code } => Ok(Some(*code)),
            State::Started { child, pidfd } => {
                match sys::wait_child(child, pidfd.as_ref(), deadline)? {
                    Some(st) => {
                        let code = sys::exitcode(&st);
                        self.state = State::Exited { code };
                        Ok(Some(code))
                    }
                    None => Ok(None),
                }
            }
        }
    }

    /// Wait for the child to exit; returns its exit code.
    pub fn join(&mut self) -> Result<i32> {
        self.poll_exit(Deadline::never())?.ok_or(Error::Timeout)
    }

    /// Wait at most `timeout`; `Ok(None)` if the child is still running.
    pub fn join_timeout(&mut self, timeout: Duration) -> Result<Option<i32>> {
        self.poll_exit(Deadline::after(Some(timeout)))
    }

    /// Whether the child has started and not yet exited.
    pub fn is_alive(&mut self) -> bool {
        matches!(self.state, State::Started { .. })
            && matches!(
                self.poll_exit(Deadline::after(Some(Duration::ZERO))),
                Ok(None)
            )
    }

    /// The exit code (`None` while running or before start).
    pub fn exitcode(&mut self) -> Option<i32> {
        self.poll_exit(Deadline::after(Some(Duration::ZERO)))
            .ok()
            .flatten()
    }

    fn signal(&mut self, sig: libc::c_int) -> Result<()> {
        if let State::Started { child, .. } = &mut self.state {
            // Not reaped yet (we hold the Child), so the pid cannot be reused.
            if child.try_wait()?.is_none() {
                sys::kill(child.id(), sig)?;
            }
            Ok(())
        } else if let State::Exited { .. } = self.state {
            Ok(())
        } else {
            Err(Error::NotStarted)
        }
    }

    /// Send SIGTERM (exit code becomes `-15`).
    pub fn terminate(&mut self) -> Result<()> {
        self.signal(libc::SIGTERM)
    }

    /// Send SIGKILL (exit code becomes `-9`).
    pub fn kill(&mut self) -> Result<()> {
        self.signal(libc::SIGKILL)
    }

    /// Release resources; an error while the child runs (Python's `close`).
    /// Later calls other than `close` return [`Error::Closed`].
    pub fn close(&mut self) -> Result<()> {
        match self.poll_exit(Deadline::after(Some(Duration::ZERO))) {
            Ok(Some(_)) | Err(Error::Closed) => {
                self.state = State::Closed;
                Ok(())
            }
            Ok(None) => Err(Error::StillRunning),
            Err(e) => Err(e),
        }
    }
}

thread_local! {
    static KEEP: std::cell::RefCell<Vec<Box<dyn std::any::Any>>> = const { std::cell::RefCell::new(Vec::new()) };
}
