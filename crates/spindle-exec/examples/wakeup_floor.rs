//! The floor under `apply_async(...).get()`: what one wake-up costs on this
//! machine, measured without spindle-exec. Prints medians (µs) of:
//!
//! * `socket_pingpong_rtt`: two processes bouncing 42 bytes over a
//!   `SOCK_STREAM` socketpair, blocking `recv` (two wake-ups per round trip);
//! * `condvar_pingpong_rtt`: two threads bouncing a flag through a
//!   `Mutex` + `Condvar` (two futex wake-ups per round trip).
//!
//! A pool round trip is caller → worker (socket), worker → supervisor
//! thread (socket), supervisor → caller (futex): about one socket ping-pong
//! plus half a condvar ping-pong, plus the work in between.
//!
//! `cargo run --release -p spindle-exec --example wakeup_floor` (env:
//! `BENCH_REPEATS`, default 5; each repeat is 20,000 round trips).

use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

const N: usize = 20_000;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn send(fd: i32, b: &[u8]) {
    // SAFETY: `b` is valid for its length.
    let r = unsafe { libc::send(fd, b.as_ptr().cast(), b.len(), libc::MSG_NOSIGNAL) };
    assert_eq!(r, b.len() as isize);
}

fn recv(fd: i32, b: &mut [u8]) -> usize {
    // SAFETY: `b` is valid for its length.
    let r = unsafe { libc::recv(fd, b.as_mut_ptr().cast(), b.len(), 0) };
    assert!(r >= 0);
    r as usize
}

fn socket_pingpong() -> f64 {
    let mut fds = [0i32; 2];
    // SAFETY: `fds` has room for the two fds.
    let r = unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM, 0, fds.as_mut_ptr()) };
    assert_eq!(r, 0);
    // SAFETY: plain fork; the child only makes system calls and exits.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    let mut buf = [0u8; 64];
    if pid == 0 {
        // Child: echo until end-of-file (which needs the parent's end closed here).
        // SAFETY: closing our copy of the parent's end.
        unsafe { libc::close(fds[0]) };
        loop {
            let n = recv(fds[1], &mut buf);
            if n == 0 {
                // SAFETY: leave without running the parent's atexit handlers.
                unsafe { libc::_exit(0) };
            }
            send(fds[1], &buf[..n]);
        }
    }
    // SAFETY: closing our copy of the child's end.
    unsafe { libc::close(fds[1]) };
    let msg = [7u8; 42];
    let mut t0 = Instant::now();
    for i in 0..1000 + N {
        if i == 1000 {
            t0 = Instant::now();
        }
        send(fds[0], &msg);
        let mut got = 0;
        while got < msg.len() {
            got += recv(fds[0], &mut buf[got..]);
        }
    }
    let dt = t0.elapsed().as_secs_f64() / N as f64 * 1e6;
    // SAFETY: closing our fd and reaping the child we forked.
    unsafe {
        libc::close(fds[0]);
        libc::waitpid(pid, std::ptr::null_mut(), 0);
    }
    dt
}

fn condvar_pingpong() -> f64 {
    let s = Arc::new((Mutex::new(0u64), Condvar::new()));
    let s2 = Arc::clone(&s);
    let h = std::thread::spawn(move || {
        let (m, c) = &*s2;
        let mut g = m.lock().unwrap();
        loop {
            while *g % 2 == 0 {
                g = c.wait(g).unwrap();
            }
            if *g == u64::MAX {
                return;
            }
            *g += 1;
            c.notify_one();
        }
    });
    let (m, c) = &*s;
    let total = 1000 + N as u64;
    let mut t0 = Instant::now();
    let mut g = m.lock().unwrap();
    for i in 0..total {
        if i == 1000 {
            t0 = Instant::now();
        }
        *g += 1;
        c.notify_one();
        while *g % 2 == 1 {
            g = c.wait(g).unwrap();
        }
    }
    let dt = t0.elapsed().as_secs_f64() / N as f64 * 1e6;
    *g = u64::MAX;
    c.notify_one();
    drop(g);
    h.join().unwrap();
    dt
}

fn main() {
    let repeats: usize = std::env::var("BENCH_REPEATS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let mut sock = Vec::new();
    let mut cv = Vec::new();
    for _ in 0..repeats {
        sock.push(socket_pingpong());
        cv.push(condvar_pingpong());
    }
    println!(
        "{{\"metric\": \"socket_pingpong_rtt\", \"value\": {:.3}, \"unit\": \"us\"}}",
        median(sock)
    );
    println!(
        "{{\"metric\": \"condvar_pingpong_rtt\", \"value\": {:.3}, \"unit\": \"us\"}}",
        median(cv)
    );
}
