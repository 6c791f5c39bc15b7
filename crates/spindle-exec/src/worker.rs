//! Starting worker processes (re-executing the current binary) and the code
//! that runs inside them.
//!
//! A child is `/proc/self/exe` re-run with the environment variable
//! [`ENV`] set; [`crate::init`] notices it and never returns. Functions are
//! identified by their address relative to an anchor function in this crate
//! (the procspawn technique): the child is the very same executable (we exec
//! `/proc/self/exe`, which stays the same inode even if the file on disk is
//! replaced), so the offset names the same function despite ASLR.
//!
//! All children are forked from one long-lived "spawner" thread: Linux's
//! `PR_SET_PDEATHSIG` fires when the *thread* that forked the child exits,
//! so forking from a short-lived thread (a test, a pool supervisor) would
//! kill the child too early. With the spawner thread the signal fires only
//! when the whole parent process dies, which is what "orphans die with their
//! parent" needs.

use crate::error::{panic_message, Error, RemoteError, Result};
use crate::sys::{self, Deadline};
use crate::wire::{
    self, Link, Rx, Tx, K_ACK, K_ERROR, K_INIT, K_PING, K_PONG, K_RESULT, K_SHUTDOWN, K_TASK,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::cell::RefCell;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, OnceLock};
use std::time::Duration;

/// Environment variable marking a worker child.
pub const ENV: &str = "SPINDLE_EXEC_WORKER";
/// Argument given to workers; a binary that forgot `init()` and is a libtest
/// harness treats it as a test-name filter that matches nothing, so it exits
/// at once instead of re-running its tests (no fork bomb).
pub const ARG: &str = "__spindle_exec_worker__";

#[inline(never)]
fn anchor() {
    std::hint::black_box(());
}

pub(crate) fn fn_offset(addr: usize) -> i64 {
    (addr as i64).wrapping_sub(anchor as fn() as usize as i64)
}

pub(crate) fn fn_addr(off: i64) -> usize {
    (anchor as fn() as usize as i64).wrapping_add(off) as usize
}

/// Runs a process target; returns the exit code.
pub(crate) type ProcTramp = fn(usize, &[u8]) -> i32;
/// Runs a chunk of pool tasks and sends the reply frame. It takes the `Rx`,
/// not the body slice: the body may live in the parent's mapping, which the
/// parent rewrites as soon as it has our reply, so the slice must be dead
/// before we send (a slice argument would stay borrowed until return).
pub(crate) type PoolTramp = fn(usize, &Rx, &mut Tx, RawFd) -> Result<()>;

// ---------------------------------------------------------------------------
// Parent side.

struct SpawnReq {
    env: String,
    keep: Vec<RawFd>,
    reply: mpsc::Sender<io::Result<Child>>,
}

fn spawner() -> Result<&'static mpsc::Sender<SpawnReq>> {
    static SPAWNER: OnceLock<Option<mpsc::Sender<SpawnReq>>> = OnceLock::new();
    SPAWNER
        .get_or_init(|| {
            let (tx, rx) = mpsc::channel::<SpawnReq>();
            std::thread::Builder::new()
                .name("spindle-exec-spawner".into())
                .spawn(move || {
                    for req in rx {
                        let r = do_spawn(&req.env, &req.keep);
                        let _ = req.reply.send(r);
                    }
                })
                .ok()
                .map(|_| tx)
        })
        .as_ref()
        .ok_or_else(|| Error::Protocol("could not start the spawner thread".into()))
}

fn do_spawn(env: &str, keep: &[RawFd]) -> io::Result<Child> {
    let mut cmd = Command::new("/proc/self/exe");
    if let Some(a0) = std::env::args_os().next() {
        cmd.arg0(a0);
    }
    cmd.arg(ARG).env(ENV, env).stdin(Stdio::null());
    let ppid = std::process::id() as libc::pid_t;
    let keep = keep.to_vec();
    // SAFETY: the closure only makes async-signal-safe calls (fcntl, prctl,
    // getppid) and does not allocate.
    unsafe {
        cmd.pre_exec(move || {
            for &fd in &keep {
                if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) < 0
            {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl.
            if libc::getppid() != ppid {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
    cmd.spawn()
}

/// A started worker child with its link.
pub(crate) struct Worker {
    pub(crate) child: Child,
    pub(crate) pid: u32,
    pub(crate) pidfd: Option<OwnedFd>,
    pub(crate) link: Link,
}

pub(crate) fn spawn_worker(mode: &str, extra_fds: &[RawFd]) -> Result<Worker> {
    let (p, c) = sys::socketpair(libc::SOCK_STREAM)?;
    let to_child = sys::memfd("spindle-exec-p2c")?;
    let to_parent = sys::memfd("spindle-exec-c2p")?;
    let env = format!(
        "{mode},{},{},{},{}",
        c.as_raw_fd(),
        to_parent.as_raw_fd(),
        to_child.as_raw_fd(),
        std::process::id()
    );
    let mut keep = vec![c.as_raw_fd(), to_child.as_raw_fd(), to_parent.as_raw_fd()];
    keep.extend_from_slice(extra_fds);
    let (rtx, rrx) = mpsc::channel();
    spawner()?
        .send(SpawnReq {
            env,
            keep,
            reply: rtx,
        })
        .map_err(|_| Error::Protocol("spawner thread is gone".into()))?;
    let child = match rrx.recv_timeout(Duration::from_secs(60)) {
        Ok(r) => r?,
        Err(_) => return Err(Error::Protocol("spawning a worker timed out".into())),
    };
    drop(c); // so the child's death shows up as end-of-file
    let pid = child.id();
    let pidfd = sys::pidfd_open(pid);
    let link = Link::new(p, to_child, to_parent)?;
    Ok(Worker {
        child,
        pid,
        pidfd,
        link,
    })
}

impl Worker {
    /// Reap the worker (it is exiting or dead), bounded; SIGKILL if it lingers.
    pub(crate) fn reap(&mut self, grace: Duration) -> crate::error::Exit {
        use crate::error::Exit;
        let st = match sys::wait_child(
            &mut self.child,
            self.pidfd.as_ref(),
            Deadline::after(Some(grace)),
        ) {
            Ok(Some(st)) => Some(st),
            _ => {
                let _ = self.child.kill();
                sys::wait_child(
                    &mut self.child,
                    self.pidfd.as_ref(),
                    Deadline::after(Some(Duration::from_secs(5))),
                )
                .ok()
                .flatten()
            }
        };
        match st {
            Some(st) => {
                let c = sys::exitcode(&st);
                if c < 0 {
                    Exit::Signal(-c)
                } else {
                    Exit::Code(c)
                }
            }
            None => Exit::Unknown,
        }
    }
}

// ---------------------------------------------------------------------------
// Child side.

pub(crate) fn child_main(spec: &str) -> ! {
    std::env::remove_var(ENV);
    let parts: Vec<&str> = spec.split(',').collect();
    let num = |i: usize| parts.get(i).and_then(|s| s.parse::<i64>().ok());
    let (Some(sock), Some(tx), Some(rx), Some(ppid)) = (num(1), num(2), num(3), num(4)) else {
        eprintln!("spindle-exec: malformed {ENV}");
        std::process::exit(70);
    };
    // SAFETY: plain syscall.
    if i64::from(unsafe { libc::getppid() }) != ppid {
        std::process::exit(70);
    }
    for fd in [sock, tx, rx] {
        // SAFETY: re-mark our inherited link fds close-on-exec.
        unsafe { libc::fcntl(fd as RawFd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    // SAFETY: these fds were inherited from the parent for this worker only.
    let link = unsafe {
        Link::new(
            OwnedFd::from_raw_fd(sock as RawFd),
            OwnedFd::from_raw_fd(tx as RawFd),
            OwnedFd::from_raw_fd(rx as RawFd),
        )
    };
    let Ok(link) = link else {
        std::process::exit(71);
    };
    match parts.first().copied() {
        Some("proc") => proc_main(link),
        Some("pool") => pool_main(link),
        _ => std::process::exit(72),
    }
}

fn proc_main(mut link: Link) -> ! {
    let h = match link.recv(Deadline::after(Some(Duration::from_secs(60)))) {
        Ok(h) if h.kind == K_TASK => h,
        _ => std::process::exit(73),
    };
    // SAFETY: the parent sent the offset of a `ProcTramp` in this executable.
    let t: ProcTramp = unsafe { std::mem::transmute::<usize, ProcTramp>(fn_addr(h.a)) };
    let code = t(fn_addr(h.b), link.rx.body());
    std::process::exit(code)
}

thread_local! {
    static LAST_PANIC: RefCell<Option<(String, String)>> = const { RefCell::new(None) };
}

/// Panic hook used in pool workers: remember message and backtrace for the
/// reply instead of printing them.
pub(crate) fn install_capturing_hook() {
    std::panic::set_hook(Box::new(|info| {
        let msg = panic_message(info.payload());
        let msg = match info.location() {
            Some(l) => format!("{msg} (at {}:{})", l.file(), l.line()),
            None => msg,
        };
        let bt = std::backtrace::Backtrace::force_capture().to_string();
        LAST_PANIC.with(|p| *p.borrow_mut() = Some((msg, bt)));
    }));
}

pub(crate) fn run_caught<R>(pid: u32, f: impl FnOnce() -> R) -> Result<R, Box<RemoteError>> {
    LAST_PANIC.with(|p| p.borrow_mut().take());
    catch_unwind(AssertUnwindSafe(f)).map_err(|payload| panic_error(pid, &*payload))
}

/// The remote error for a caught panic (message and backtrace from the hook).
fn panic_error(pid: u32, payload: &(dyn std::any::Any + Send)) -> Box<RemoteError> {
    let (message, backtrace) = LAST_PANIC
        .with(|p| p.borrow_mut().take())
        .unwrap_or_else(|| (panic_message(payload), String::new()));
    Box::new(RemoteError {
        kind: "panic".into(),
        message,
        backtrace,
        pid,
    })
}

fn pool_main(mut link: Link) -> ! {
    install_capturing_hook();
    loop {
        let h = match link.recv(Deadline::never()) {
            Ok(h) => h,
            Err(_) => std::process::exit(0),
        };
        match h.kind {
            K_INIT => {
                // SAFETY: the parent sent the offset of a `ProcTramp`.
                let t: ProcTramp = unsafe { std::mem::transmute::<usize, ProcTramp>(fn_addr(h.a)) };
                let code = t(fn_addr(h.b), link.rx.body());
                if code != 0 {
                    let _ = link.send_raw(K_ERROR, 0, 0, b"initializer failed");
                    std::process::exit(code);
                }
                if link.send_raw(K_ACK, 0, 0, &[]).is_err() {
                    std::process::exit(0);
                }
            }
            K_TASK => {
                // SAFETY: the parent sent the offset of a `PoolTramp`.
                let t: PoolTramp = unsafe { std::mem::transmute::<usize, PoolTramp>(fn_addr(h.a)) };
                let fd = link.sock.as_raw_fd();
                if t(fn_addr(h.b), &link.rx, &mut link.tx, fd).is_err() {
                    std::process::exit(0);
                }
            }
            K_PING => {
                if link.send_raw(K_PONG, 0, 0, &[]).is_err() {
                    std::process::exit(0);
                }
            }
            K_SHUTDOWN => std::process::exit(0),
            _ => std::process::exit(74),
        }
    }
}

/// Process target from a `fn(A)`.
pub(crate) fn proc_tramp<A: DeserializeOwned>(f: usize, body: &[u8]) -> i32 {
    // SAFETY: `f` is the address of a `fn(A)` of this executable (see module docs).
    let f = unsafe { std::mem::transmute::<usize, fn(A)>(f) };
    let a: A = match wire::decode_adopting(body) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("spindle-exec: could not decode the process arguments: {e}");
            return 1;
        }
    };
    match catch_unwind(AssertUnwindSafe(|| f(a))) {
        Ok(()) => 0,
        Err(_) => 1,
    }
}

/// Process target from a type with a run method.
pub(crate) fn target_tramp<T: crate::process::ProcessTarget>(_f: usize, body: &[u8]) -> i32 {
    let t: T = match wire::decode_adopting(body) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("spindle-exec: could not decode the process object: {e}");
            return 1;
        }
    };
    match catch_unwind(AssertUnwindSafe(|| t.run())) {
        Ok(()) => 0,
        Err(_) => 1,
    }
}

/// This process's pid, looked up once.
fn my_pid() -> u32 {
    static PID: OnceLock<u32> = OnceLock::new();
    *PID.get_or_init(std::process::id)
}

/// `Result<R, RemoteError>` as the wire format encodes it, by reference.
#[derive(Serialize)]
enum ItemRef<'a, R> {
    Ok(&'a R),
    Err(Box<RemoteError>),
}

/// Pool chunk: decode `Vec<A>`, run each, reply.
///
/// When every item succeeds the reply is a plain `Vec<R>` with header field
/// `a` = [`wire::RESULT_PLAIN`] (one `catch_unwind` for the whole chunk, no
/// per-item error tags); otherwise it is `Vec<Result<R, RemoteError>>` with
/// `a` = 0.
pub(crate) fn pool_tramp<A: DeserializeOwned, R: Serialize>(
    f: usize,
    rx: &Rx,
    tx: &mut Tx,
    fd: RawFd,
) -> Result<()> {
    // SAFETY: `f` is the address of a `fn(A) -> R` of this executable.
    let f = unsafe { std::mem::transmute::<usize, fn(A) -> R>(f) };
    // Our pid, for errors only (`getpid` is a system call; this is a
    // call per chunk otherwise).
    let pid = my_pid();
    let items: Vec<A> = match wire::decode(rx.body()) {
        Ok(v) => v,
        Err(e) => {
            let err = RemoteError {
                kind: "decode".into(),
                message: e.to_string(),
                backtrace: String::new(),
                pid,
            };
            return tx.send_value(fd, K_ERROR, 0, 0, &err);
        }
    };
    let n = items.len();
    let mut it = items.into_iter();
    let mut out: Vec<R> = Vec::with_capacity(n);
    LAST_PANIC.with(|p| p.borrow_mut().take());
    // `out` has room for every item, so a panic can only come from `f`; the
    // iterator has then already yielded the failing item.
    let run = catch_unwind(AssertUnwindSafe(|| {
        for a in &mut it {
            out.push(f(a));
        }
    }));
    let results: Vec<Result<R, Box<RemoteError>>> = match run {
        Ok(()) => match tx.send_value(fd, K_RESULT, wire::RESULT_PLAIN, 0, &out) {
            Err(Error::Encode(_)) => out.into_iter().map(Ok).collect(),
            other => return other,
        },
        Err(payload) => {
            let mut results: Vec<Result<R, Box<RemoteError>>> = Vec::with_capacity(n);
            results.extend(out.into_iter().map(Ok));
            results.push(Err(panic_error(pid, &*payload)));
            results.extend(it.map(|a| run_caught(pid, || f(a))));
            results
        }
    };
    match tx.send_value(fd, K_RESULT, 0, 0, &results) {
        Err(Error::Encode(_)) => {
            // Some result cannot be serialized: report it per item, keep the worker.
            let fixed: Vec<ItemRef<'_, R>> = results
                .iter()
                .map(|r| match r {
                    Ok(v) => match wire::encode(v) {
                        Ok(_) => ItemRef::Ok(v),
                        Err(e) => ItemRef::Err(Box::new(RemoteError {
                            kind: "encode".into(),
                            message: e.to_string(),
                            backtrace: String::new(),
                            pid,
                        })),
                    },
                    Err(e) => ItemRef::Err(e.clone()),
                })
                .collect();
            tx.send_value(fd, K_RESULT, 0, 0, &fixed)
        }
        other => other,
    }
}
