//! Integration tests: ports of CPython's `_test_multiprocessing.py` and the
//! crash cases of `test_concurrent_futures`. Runs with `harness = false`
//! (see `spindle_exec::testing`): every test is bounded by the runner's
//! timeout and every blocking call below has an explicit timeout too.

use serde::{Deserialize, Serialize};
use spindle_exec::shmem::{SharedArray, SharedCounter};
use spindle_exec::{
    pipe, Connection, Error, Exit, Lock, Pool, Process, ProcessTarget, Queue, RLock, SharedMemory,
    ThreadPool,
};
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(20);

/// Ends the message of every panic these tests cause on purpose.
const ON_PURPOSE: &str = "(on purpose)";

/// Panics caused on purpose print one line, even with `RUST_BACKTRACE` set:
/// their backtraces, dozens of lines each, buried the real failures. Every
/// other panic, such as a failed assertion, goes to the default hook,
/// backtrace and all. Installed before `run_tests`, so the child processes
/// the tests start (which run this `main` too) have it as well.
fn quiet_deliberate_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("");
        if message.ends_with(ON_PURPOSE) {
            eprintln!("a test panicked on purpose: {message}");
        } else {
            default(info);
        }
    }));
}

// ---------------------------------------------------------------------------
// Task functions (run in workers).

fn sqr(x: i64) -> i64 {
    x * x
}

fn sqr_slow(x: i64) -> i64 {
    std::thread::sleep(Duration::from_millis(20));
    x * x
}

fn sleep_ms(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

fn fail_on_2(x: i64) -> i64 {
    if x == 2 {
        panic!("boom at {x} {ON_PURPOSE}");
    }
    x
}

fn fail_some(x: i64) -> i64 {
    if x % 5 == 0 {
        panic!("no {x} {ON_PURPOSE}");
    }
    x
}

fn getpid(_: ()) -> u32 {
    std::process::id()
}

fn die_on_3(x: i64) -> i64 {
    if x == 3 {
        // SAFETY: test of worker death.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
        std::thread::sleep(Duration::from_secs(5));
    }
    x
}

fn abort_task(_: ()) -> i64 {
    std::process::abort()
}

fn exit_task(_: ()) -> i64 {
    std::process::exit(0)
}

#[allow(unconditional_recursion)]
fn recurse(n: u64) -> u64 {
    let buf = std::hint::black_box([n; 64]);
    recurse(buf[0] + 1) + buf[1]
}

fn overflow_task(_: ()) -> u64 {
    recurse(0)
}

fn echo_bytes(b: serde_bytes::ByteBuf) -> serde_bytes::ByteBuf {
    b
}

fn big_result(n: usize) -> serde_bytes::ByteBuf {
    serde_bytes::ByteBuf::from(vec![7u8; n])
}

/// Serializing this crashes the worker half-way through sending a big result.
#[derive(Debug)]
struct CrashOnSend;
impl Serialize for CrashOnSend {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = s.serialize_seq(Some(1 << 20))?;
        for i in 0..(1u32 << 20) {
            if i == 1 << 19 {
                std::process::abort();
            }
            seq.serialize_element(&i)?;
        }
        seq.end()
    }
}
impl<'de> Deserialize<'de> for CrashOnSend {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Vec::<u32>::deserialize(d).map(|_| CrashOnSend)
    }
}
fn crash_on_send(_: ()) -> CrashOnSend {
    CrashOnSend
}

/// A result that cannot be serialized (Python's unpicklable result).
#[derive(Debug)]
struct Unserializable;
impl Serialize for Unserializable {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom("cannot serialize Unserializable"))
    }
}
impl<'de> Deserialize<'de> for Unserializable {
    fn deserialize<D: serde::Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        Ok(Unserializable)
    }
}
fn unserializable(_: ()) -> Unserializable {
    Unserializable
}

/// Kills its worker the first time (marker file absent), succeeds after.
fn die_once(marker: String) -> String {
    if std::fs::metadata(&marker).is_err() {
        let _ = std::fs::write(&marker, b"x");
        // SAFETY: test of worker death.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    }
    "survived".to_string()
}

fn tmp_marker(name: &str) -> String {
    let p = std::env::temp_dir().join(format!("spindle-exec-{name}-{}", std::process::id()));
    let _ = std::fs::remove_file(&p);
    p.to_string_lossy().into_owned()
}

/// Poll `cond` until true (bounded by `T`).
fn eventually(what: &str, cond: impl Fn() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        assert!(t0.elapsed() < T, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn assert_lost(r: Result<impl std::fmt::Debug, Error>, sig: i32) {
    match r {
        Err(Error::WorkerLost {
            pid,
            exit: Exit::Signal(s),
        }) => {
            assert!(pid > 0);
            assert_eq!(s, sig, "signal");
        }
        other => panic!("expected WorkerLost by signal {sig}, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------
// Process (_TestProcess, _TestSubclassingProcess).

fn child_hello((q, name): (Queue<String>, String)) {
    q.put(&format!("hello {name}")).unwrap();
}

fn test_process() {
    let q: Queue<String> = Queue::new().unwrap();
    let mut p = Process::new(child_hello, (q.clone(), "john".to_string()));
    assert_eq!(p.pid(), None);
    assert_eq!(p.exitcode(), None);
    p.start().unwrap();
    assert!(p.pid().is_some());
    assert_eq!(q.get_timeout(T).unwrap(), "hello john");
    assert_eq!(p.join_timeout(T).unwrap(), Some(0));
    assert!(!p.is_alive());
    assert_eq!(p.exitcode(), Some(0));
    assert!(matches!(p.start(), Err(Error::AlreadyStarted)));
}

fn child_exit(code: i32) {
    std::process::exit(code)
}

fn child_panic(_: ()) {
    panic!("child panics {ON_PURPOSE}")
}

fn child_sleep(secs: u64) {
    std::thread::sleep(Duration::from_secs(secs));
}

fn test_sys_exit() {
    let mut p = Process::spawn(child_exit, 7).unwrap();
    assert_eq!(p.join_timeout(T).unwrap(), Some(7));
    let mut p = Process::spawn(child_panic, ()).unwrap();
    assert_eq!(p.join_timeout(T).unwrap(), Some(1));
}

fn test_terminate_kill() {
    let mut p = Process::spawn(child_sleep, 30).unwrap();
    assert!(p.is_alive());
    assert_eq!(p.join_timeout(Duration::from_millis(100)).unwrap(), None);
    p.terminate().unwrap();
    assert_eq!(p.join_timeout(T).unwrap(), Some(-libc::SIGTERM));
    let mut p = Process::spawn(child_sleep, 30).unwrap();
    p.kill().unwrap();
    assert_eq!(p.join_timeout(T).unwrap(), Some(-libc::SIGKILL));
}

fn test_close() {
    let mut p = Process::spawn(child_sleep, 30).unwrap();
    assert!(matches!(p.close(), Err(Error::StillRunning)));
    p.kill().unwrap();
    p.join_timeout(T).unwrap();
    p.close().unwrap();
    assert!(matches!(p.join_timeout(T), Err(Error::Closed)));
}

#[derive(Serialize, Deserialize)]
struct NewProcess {
    num: u32,
    out: Queue<(u32, u32)>,
}

impl ProcessTarget for NewProcess {
    fn run(self) {
        println!(
            "I am process {}, my pid is {}",
            self.num,
            std::process::id()
        );
        self.out.put(&(self.num, std::process::id())).unwrap();
    }
}

fn test_subclassing() {
    let q = Queue::new().unwrap();
    let mut ps: Vec<Process> = (0..2)
        .map(|num| {
            Process::from_target(NewProcess {
                num,
                out: q.clone(),
            })
        })
        .collect();
    for p in &mut ps {
        p.start().unwrap();
    }
    let mut got: Vec<(u32, u32)> = (0..2).map(|_| q.get_timeout(T).unwrap()).collect();
    got.sort();
    for (i, p) in ps.iter_mut().enumerate() {
        assert_eq!(got[i], (i as u32, p.pid().unwrap()));
        assert_eq!(p.join_timeout(T).unwrap(), Some(0));
    }
}

fn grandparent((q,): (Queue<u32>,)) {
    let p = Process::spawn(child_sleep, 60).unwrap();
    q.put(&p.pid().unwrap()).unwrap();
    std::thread::sleep(Duration::from_secs(60));
}

fn pid_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(s) => s
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}

fn test_orphans_die_with_parent() {
    let q = Queue::new().unwrap();
    let mut p = Process::spawn(grandparent, (q.clone(),)).unwrap();
    let grandchild = q.get_timeout(T).unwrap();
    assert!(!pid_gone(grandchild));
    p.kill().unwrap();
    assert_eq!(p.join_timeout(T).unwrap(), Some(-9));
    let t0 = Instant::now();
    while !pid_gone(grandchild) {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "orphan {grandchild} survived its parent"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------
// Queue (_TestQueue).

fn producer((q, base): (Queue<u64>, u64)) {
    for i in 0..100 {
        q.put(&(base + i)).unwrap();
    }
}

fn test_queue_put_get() {
    let q: Queue<u64> = Queue::new().unwrap();
    assert!(q.empty());
    for i in 0..10 {
        q.put_timeout(&i, T).unwrap();
    }
    assert!(!q.empty());
    for i in 0..10 {
        assert_eq!(q.get_nowait().unwrap(), i);
    }
    assert!(matches!(q.get_nowait(), Err(Error::Empty)));
    // Many producers.
    let mut ps: Vec<Process> = (0..3)
        .map(|k| Process::spawn(producer, (q.clone(), k * 1000)).unwrap())
        .collect();
    let mut got: Vec<u64> = (0..300).map(|_| q.get_timeout(T).unwrap()).collect();
    got.sort();
    let mut want: Vec<u64> = (0..3)
        .flat_map(|k| (0..100).map(move |i| k * 1000 + i))
        .collect();
    want.sort();
    assert_eq!(got, want);
    for p in &mut ps {
        assert_eq!(p.join_timeout(T).unwrap(), Some(0));
    }
}

fn test_queue_timeout_full() {
    let q: Queue<u64> = Queue::new().unwrap();
    let t0 = Instant::now();
    assert!(matches!(
        q.get_timeout(Duration::from_millis(200)),
        Err(Error::Empty)
    ));
    let e = t0.elapsed();
    assert!(
        e >= Duration::from_millis(190) && e < Duration::from_secs(5),
        "{e:?}"
    );
    let mut n = 0;
    loop {
        match q.put_nowait(&n) {
            Ok(()) => n += 1,
            Err(Error::Full) => break,
            Err(e) => panic!("{e}"),
        }
        assert!(n < 10_000_000);
    }
    assert!(n > 10);
    assert!(matches!(
        q.put_timeout(&0, Duration::from_millis(50)),
        Err(Error::Full)
    ));
    assert_eq!(q.get_timeout(T).unwrap(), 0);
}

fn test_queue_closed() {
    let q: Queue<u64> = Queue::new().unwrap();
    q.put(&1).unwrap();
    q.close();
    assert!(matches!(q.put(&2), Err(Error::Closed)));
    assert!(matches!(q.get_timeout(T), Err(Error::Closed)));
}

fn big_producer((q,): (Queue<serde_bytes::ByteBuf>,)) {
    q.put(&serde_bytes::ByteBuf::from(vec![42u8; 3 << 20]))
        .unwrap();
}

fn test_queue_big_item() {
    let q = Queue::new().unwrap();
    let mut p = Process::spawn(big_producer, (q.clone(),)).unwrap();
    let b = q.get_timeout(T).unwrap();
    assert_eq!(b.len(), 3 << 20);
    assert!(b.iter().all(|&x| x == 42));
    assert_eq!(p.join_timeout(T).unwrap(), Some(0));
}

// ---------------------------------------------------------------------------
// Pipe (_TestConnection).

fn echo_child((c,): (Connection,)) {
    loop {
        match c.recv_bytes_timeout(Duration::from_secs(20)) {
            Ok(b) => c.send_bytes(&b).unwrap(),
            Err(_) => return,
        }
    }
}

fn test_connection() {
    let (a, b) = pipe(true).unwrap();
    let mut p = Process::spawn(echo_child, (b,)).unwrap();
    assert!(!a.poll(Duration::from_millis(50)).unwrap());
    a.send(&(1u32, "two".to_string())).unwrap();
    assert!(a.poll(T).unwrap());
    assert_eq!(
        a.recv_timeout::<(u32, String)>(T).unwrap(),
        (1, "two".to_string())
    );
    let really_big = vec![7u8; 16 << 20];
    a.send_bytes(&really_big).unwrap();
    assert_eq!(a.recv_bytes_timeout(T).unwrap(), really_big);
    a.send_bytes(b"").unwrap();
    assert_eq!(a.recv_bytes_timeout(T).unwrap(), b"");
    // Child exits when it sees... a short message it cannot parse? No: kill it and expect EOF.
    p.kill().unwrap();
    p.join_timeout(T).unwrap();
    assert!(matches!(a.recv_bytes_timeout(T), Err(Error::Eof)));
}

fn test_duplex_false() {
    let (r, w) = pipe(false).unwrap();
    w.send(&5u8).unwrap();
    assert_eq!(r.recv_timeout::<u8>(T).unwrap(), 5);
    assert!(r.send(&1u8).is_err());
    assert!(w.recv_timeout::<u8>(Duration::from_millis(10)).is_err());
    drop(w);
    assert!(matches!(r.recv_timeout::<u8>(T), Err(Error::Eof)));
}

// ---------------------------------------------------------------------------
// Shared memory (_TestValue, _TestArray, _TestSharedMemory).

fn add_many((c, a, m): (SharedCounter, SharedArray<AtomicU64>, SharedMemory)) {
    for i in 0..1000 {
        c.fetch_add(1);
        a[i % 8].fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        // Racing the other child's writes to the same bytes: allowed, since
        // `write` stores each byte atomically.
        m.write(4096, b"child was here").unwrap();
    }
}

fn test_shared_memory() {
    let c = SharedCounter::new(5).unwrap();
    let a = SharedArray::<AtomicU64>::new(8).unwrap();
    assert_eq!(a.len(), 8);
    assert!(SharedArray::<AtomicU64>::new(0).is_err());
    let m = SharedMemory::new(5000).unwrap();
    assert!(m.len() >= 5000);
    assert!(SharedMemory::new(0).is_err());
    let mut ps: Vec<Process> = (0..2)
        .map(|_| Process::spawn(add_many, (c.clone(), a.clone(), m.clone())).unwrap())
        .collect();
    for p in &mut ps {
        assert_eq!(p.join_timeout(T).unwrap(), Some(0));
    }
    assert_eq!(c.get(), 2005);
    let s: u64 = a
        .iter()
        .map(|a| a.load(std::sync::atomic::Ordering::SeqCst))
        .sum();
    assert_eq!(s, 2000);
    let mut buf = [0u8; 14];
    m.read(4096, &mut buf).unwrap();
    assert_eq!(&buf, b"child was here");
    assert!(m.read(m.len() - 1, &mut buf).is_err());
    // SAFETY: both children were joined above and this thread is the only
    // user left, so nothing races these plain copies.
    unsafe {
        m.write_unsync(8000, b"plain copy").unwrap();
        let mut fast = [0u8; 10];
        m.read_unsync(8000, &mut fast).unwrap();
        assert_eq!(&fast, b"plain copy");
        assert!(m.read_unsync(m.len(), &mut fast).is_err());
    }
}

/// Threads of one process writing and reading the same bytes at once: the
/// case that was a data race when `read`/`write` were plain copies (run it
/// under ThreadSanitizer or helgrind to see that it no longer is).
fn test_shared_memory_threads() {
    let m = SharedMemory::new(64).unwrap();
    let writers: Vec<_> = [b'a', b'b']
        .into_iter()
        .map(|c| {
            let m = m.clone();
            std::thread::spawn(move || {
                for _ in 0..2000 {
                    m.write(0, &[c; 32]).unwrap();
                }
            })
        })
        .collect();
    let mut buf = [0u8; 32];
    for _ in 0..2000 {
        m.read(0, &mut buf).unwrap();
        assert!(buf.iter().all(|&b| b == 0 || b == b'a' || b == b'b'));
    }
    for w in writers {
        w.join().unwrap();
    }
    m.read(0, &mut buf).unwrap();
    assert!(buf.iter().all(|&b| b == b'a' || b == b'b'));
}

// ---------------------------------------------------------------------------
// Lock (_TestLock) and the killed-holder case.

fn hold_lock((l, q): (Lock, Queue<u8>)) {
    l.acquire().unwrap();
    q.put(&1).unwrap();
    std::thread::sleep(Duration::from_secs(60));
}

fn test_lock() {
    let l = Lock::new().unwrap();
    l.acquire().unwrap();
    assert!(!l.try_acquire().unwrap());
    l.release().unwrap();
    assert!(matches!(l.release(), Err(Error::NotLocked)));
    {
        let _g = l.lock_timeout(T).unwrap();
        assert!(!l.try_acquire().unwrap());
    }
    assert!(l.try_acquire().unwrap());
    l.release().unwrap();
}

fn test_lock_killed_holder() {
    let l = Lock::new().unwrap();
    let q = Queue::new().unwrap();
    let mut p = Process::spawn(hold_lock, (l.clone(), q.clone())).unwrap();
    q.get_timeout(T).unwrap();
    assert!(
        !l.acquire_timeout(Duration::from_millis(100)).unwrap(),
        "child holds the lock"
    );
    p.kill().unwrap();
    assert!(
        l.acquire_timeout(T).unwrap(),
        "a killed holder must not deadlock the others"
    );
    l.release().unwrap();
    p.join_timeout(T).unwrap();
}

fn test_rlock() {
    let l = RLock::new().unwrap();
    l.acquire().unwrap();
    l.acquire().unwrap();
    l.acquire().unwrap();
    l.release().unwrap();
    l.release().unwrap();
    let l2 = l.clone();
    let h = spindle_exec::spawn(move || l2.acquire_timeout(Duration::from_millis(50)).unwrap())
        .unwrap();
    assert!(!h.join().unwrap());
    l.release().unwrap();
    assert!(matches!(l.release(), Err(Error::NotLocked)));
}

// ---------------------------------------------------------------------------
// Pool (_TestPool, _TestPoolWorkerErrors, _TestPoolWorkerLifetime).

fn pool2() -> Pool {
    Pool::with_processes(2).unwrap()
}

fn test_pool_apply_map() {
    let pool = pool2();
    assert_eq!(pool.apply(sqr, 5).unwrap(), 25);
    assert_eq!(pool.apply(|(a, b): (i64, i64)| a + b, (2, 3)).unwrap(), 5); // starmap style
    let xs: Vec<i64> = (0..10).collect();
    assert_eq!(
        pool.map(sqr, xs.clone(), None).unwrap(),
        xs.iter().map(|x| x * x).collect::<Vec<_>>()
    );
    let xs: Vec<i64> = (0..100).collect();
    assert_eq!(
        pool.map(sqr, xs.clone(), Some(53)).unwrap(),
        xs.iter().map(|x| x * x).collect::<Vec<_>>()
    );
    assert_eq!(
        pool.map(sqr, Vec::<i64>::new(), None).unwrap(),
        Vec::<i64>::new()
    );
    assert!(matches!(
        pool.map(sqr, xs, Some(0)),
        Err(Error::InvalidArgument(_))
    ));
    let r = pool.apply_async(getpid, ()).unwrap();
    assert!(r.wait_timeout(T));
    assert!(r.ready());
    assert!(r.successful().unwrap());
    assert!(pool.pids().contains(&r.get_timeout(T).unwrap()));
    pool.close();
    pool.join_timeout(T).unwrap();
}

fn test_make_pool() {
    assert!(matches!(
        Pool::with_processes(0),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        Pool::builder().processes(1).maxtasksperchild(0).build(),
        Err(Error::InvalidArgument(_))
    ));
    let p = Pool::new().unwrap();
    assert_eq!(p.processes(), spindle_exec::cpu_count());
}

fn test_async_timeout() {
    let pool = pool2();
    let r = pool.apply_async(sleep_ms, 1000).unwrap();
    assert!(matches!(r.successful(), Err(Error::NotReady)));
    let t0 = Instant::now();
    assert!(matches!(
        r.get_timeout(Duration::from_millis(50)),
        Err(Error::Timeout)
    ));
    assert!(t0.elapsed() < Duration::from_secs(1));
    assert_eq!(r.get_timeout(T).unwrap(), 1000);
}

fn test_imap() {
    let pool = pool2();
    let it = pool.imap(sqr, 0..10, 1).unwrap();
    assert_eq!(
        it.map(|r| r.unwrap()).collect::<Vec<_>>(),
        (0..10).map(|x| x * x).collect::<Vec<_>>()
    );
    let it = pool.imap(sqr, 0..1000, 100).unwrap();
    assert_eq!(
        it.map(|r| r.unwrap()).collect::<Vec<_>>(),
        (0..1000).map(|x| x * x).collect::<Vec<_>>()
    );
    assert!(pool.imap(sqr, 0..3, 0).is_err());
    // next with a timeout does not consume.
    let mut it = pool.imap(sleep_ms, vec![400, 0], 1).unwrap();
    assert!(matches!(
        it.next_timeout(Duration::from_millis(20)),
        Some(Err(Error::Timeout))
    ));
    assert_eq!(it.next_timeout(T).unwrap().unwrap(), 400);
    assert_eq!(it.next_timeout(T).unwrap().unwrap(), 0);
    assert!(it.next_timeout(T).is_none());
}

fn test_imap_handle_iterable_exception() {
    let pool = pool2();
    let got: Vec<Result<i64, Error>> = pool.imap(fail_on_2, 0..5, 1).unwrap().collect();
    assert_eq!(got.len(), 5);
    for (i, r) in got.iter().enumerate() {
        if i == 2 {
            assert!(
                matches!(r, Err(Error::Remote(e)) if e.message.contains("boom at 2")),
                "{r:?}"
            );
        } else {
            assert_eq!(*r.as_ref().unwrap(), i as i64);
        }
    }
}

fn test_imap_unordered() {
    let pool = pool2();
    let mut got: Vec<i64> = pool
        .imap_unordered(sqr_slow, 0..20, 1)
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    got.sort();
    assert_eq!(got, (0..20).map(|x| x * x).collect::<Vec<_>>());
    let mut it = pool.imap_unordered(sleep_ms, vec![300], 1).unwrap();
    assert!(matches!(
        it.next_timeout(Duration::from_millis(10)),
        Some(Err(Error::Timeout))
    ));
    assert_eq!(it.next_timeout(T).unwrap().unwrap(), 300);
}

fn test_traceback() {
    let pool = pool2();
    match pool.apply_async(fail_on_2, 2).unwrap().get_timeout(T) {
        Err(Error::Remote(e)) => {
            assert_eq!(e.kind, "panic");
            assert!(e.message.contains("boom at 2"), "{}", e.message);
            assert!(e.message.contains("integration.rs"), "{}", e.message);
            assert!(!e.backtrace.is_empty());
            assert!(e.pid > 0);
        }
        other => panic!("{other:?}"),
    }
    // The worker survived the panic.
    assert_eq!(pool.apply_async(sqr, 3).unwrap().get_timeout(T).unwrap(), 9);
}

fn test_map_no_failfast() {
    let pool = pool2();
    let t0 = Instant::now();
    let r = pool.map_timeout(fail_some, 0..40, Some(1), T);
    assert!(
        matches!(r, Err(Error::Remote(ref e)) if e.message.contains("no 0")),
        "{r:?}"
    );
    assert!(t0.elapsed() < T);
    // all chunks completed: the pool is idle and responsive
    assert_eq!(pool.apply(sqr, 4).unwrap(), 16);
}

fn test_unserializable_result() {
    let pool = pool2();
    match pool.apply_async(unserializable, ()).unwrap().get_timeout(T) {
        Err(Error::Remote(e)) => assert_eq!(e.kind, "encode"),
        other => panic!("{other:?}"),
    }
    eventually("2 workers", || pool.pids().len() == 2);
    let pids = pool.pids();
    assert_eq!(pool.apply(sqr, 2).unwrap(), 4);
    assert_eq!(pool.pids(), pids, "the worker survived");
}

fn test_async_callbacks() {
    let pool = pool2();
    let (tx, rx) = std::sync::mpsc::channel();
    let tx2 = tx.clone();
    pool.apply_async_with_callback(sqr, 7, move |r| tx.send(r.as_ref().ok().copied()).unwrap())
        .unwrap();
    pool.apply_async_with_callback(fail_on_2, 2, move |r| {
        tx2.send(r.as_ref().ok().copied()).unwrap()
    })
    .unwrap();
    let mut got = vec![rx.recv_timeout(T).unwrap(), rx.recv_timeout(T).unwrap()];
    got.sort();
    assert_eq!(got, vec![None, Some(49)]);
}

fn test_pool_lifecycle() {
    let pool = pool2();
    assert!(matches!(pool.join_timeout(T), Err(Error::PoolRunning)));
    let r = pool.apply_async(sleep_ms, 100).unwrap();
    pool.close();
    assert!(matches!(
        pool.apply_async(sqr, 1),
        Err(Error::PoolNotRunning)
    ));
    assert!(matches!(
        pool.map(sqr, 0..3, None),
        Err(Error::PoolNotRunning)
    ));
    pool.join_timeout(T).unwrap();
    assert_eq!(
        r.get_timeout(Duration::ZERO).unwrap(),
        100,
        "close drains pending work"
    );
    assert!(pool.pids().is_empty());
}

fn test_pool_terminate() {
    let pool = pool2();
    let r = pool.map_timeout(sleep_ms, vec![1u64; 0], None, T).unwrap();
    assert!(r.is_empty());
    let pending: Vec<_> = (0..20)
        .map(|_| pool.apply_async(sleep_ms, 2000).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    let t0 = Instant::now();
    pool.terminate();
    pool.join_timeout(T).unwrap();
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "terminate must not wait for tasks"
    );
    for r in pending {
        assert!(matches!(r.get_timeout(T), Err(Error::Terminated)));
    }
    assert!(matches!(
        pool.apply_async(sqr, 1),
        Err(Error::PoolNotRunning)
    ));
}

fn test_pool_drop_terminates() {
    let pool = pool2();
    let r = pool.apply_async(sleep_ms, 10_000).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let pids = pool.pids();
    let t0 = Instant::now();
    drop(pool);
    assert!(t0.elapsed() < Duration::from_secs(5));
    assert!(matches!(r.get_timeout(T), Err(Error::Terminated)));
    for pid in pids {
        assert!(pid_gone(pid));
    }
}

fn test_pool_worker_lifetime() {
    let pool = Pool::builder()
        .processes(2)
        .maxtasksperchild(3)
        .build()
        .unwrap();
    let mut seen = std::collections::HashSet::new();
    for _ in 0..20 {
        seen.insert(pool.apply(getpid, ()).unwrap());
    }
    assert!(
        seen.len() >= 6,
        "workers are recycled: {} distinct pids",
        seen.len()
    );
    assert_eq!(pool.map(sqr, 0..50, Some(2)).unwrap().len(), 50);
    // early close must not hang (bpo-10332)
    let r = pool.map_async_like();
    pool.close();
    pool.join_timeout(T).unwrap();
    assert_eq!(r.get_timeout(T).unwrap(), 9);
}

trait MapAsyncLike {
    fn map_async_like(&self) -> spindle_exec::AsyncResult<i64>;
}
impl MapAsyncLike for Pool {
    fn map_async_like(&self) -> spindle_exec::AsyncResult<i64> {
        self.apply_async(sqr, 3).unwrap()
    }
}

fn init_worker((q,): (Queue<u32>,)) {
    q.put(&std::process::id()).unwrap();
}

fn test_initializer() {
    let q = Queue::new().unwrap();
    let pool = Pool::builder()
        .processes(2)
        .initializer(init_worker, (q.clone(),))
        .build()
        .unwrap();
    let mut got = vec![q.get_timeout(T).unwrap(), q.get_timeout(T).unwrap()];
    got.sort();
    assert_eq!(pool.apply(sqr, 3).unwrap(), 9);
    eventually("2 workers", || pool.pids().len() == 2);
    let mut pids = pool.pids();
    pids.sort();
    assert_eq!(got, pids);
    // Handles cannot travel in task arguments (only by inheritance).
    fn use_queue(q: Queue<u32>) -> u32 {
        q.get().unwrap_or(0)
    }
    assert!(matches!(
        pool.apply_async(use_queue, q.clone()),
        Err(Error::Encode(_))
    ));
}

// ---------------------------------------------------------------------------
// Crash cases (bpo-22393, test_concurrent_futures: test_deadlock, test_killed_child).

fn test_killed_worker_mid_map() {
    let pool = pool2();
    let t0 = Instant::now();
    let r = pool.map_timeout(die_on_3, 0..8, Some(1), T);
    assert_lost(r, libc::SIGKILL);
    assert!(t0.elapsed() < T);
    // The worker was replaced and the pool keeps serving.
    assert_eq!(
        pool.map_timeout(sqr, 0..8, Some(1), T).unwrap(),
        (0..8).map(|x| x * x).collect::<Vec<_>>()
    );
    eventually("replacement worker", || pool.pids().len() == 2);
    // imap: only the lost item fails; iteration continues.
    let got: Vec<_> = pool.imap(die_on_3, 0..6, 1).unwrap().collect();
    assert!(got[3].is_err());
    assert_eq!(got.iter().filter(|r| r.is_ok()).count(), 5);
}

fn test_abort_and_exit_and_overflow() {
    let pool = pool2();
    assert_lost(
        pool.apply_async(abort_task, ()).unwrap().get_timeout(T),
        libc::SIGABRT,
    );
    match pool.apply_async(exit_task, ()).unwrap().get_timeout(T) {
        Err(Error::WorkerLost {
            exit: Exit::Code(0),
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
    let r = pool.apply_async(overflow_task, ()).unwrap().get_timeout(T);
    match r {
        Err(Error::WorkerLost {
            exit: Exit::Signal(s),
            ..
        }) => assert!(s == libc::SIGABRT || s == libc::SIGSEGV),
        other => panic!("{other:?}"),
    }
    assert_eq!(pool.apply(sqr, 6).unwrap(), 36);
}

fn test_crash_big_data() {
    let pool = pool2();
    assert_lost(
        pool.apply_async(crash_on_send, ()).unwrap().get_timeout(T),
        libc::SIGABRT,
    );
    let b = pool
        .apply_async(big_result, 20 << 20)
        .unwrap()
        .get_timeout(T)
        .unwrap();
    assert_eq!(b.len(), 20 << 20);
    let payload = serde_bytes::ByteBuf::from(vec![3u8; 16 << 20]);
    assert_eq!(
        pool.apply_async(echo_bytes, payload.clone())
            .unwrap()
            .get_timeout(T)
            .unwrap(),
        payload
    );
}

fn test_sigterm_worker_mid_map_async() {
    let pool = pool2();
    let it = pool.imap(sleep_ms, vec![300u64; 8], 1).unwrap();
    // Workers start lazily; under AddressSanitizer (and on a loaded machine)
    // none had started after the 100 ms sleep below, and `pids()` was empty.
    let t0 = Instant::now();
    while pool.pids().is_empty() && t0.elapsed() < T {
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(100));
    let victim = pool.pids()[0];
    spindle_exec_kill(victim, libc::SIGTERM);
    let got: Vec<_> = it.collect();
    let lost: Vec<_> = got.iter().filter(|r| r.is_err()).collect();
    assert_eq!(lost.len(), 1, "{got:?}");
    assert!(
        matches!(lost[0], Err(Error::WorkerLost { pid, exit: Exit::Signal(15) }) if *pid == victim)
    );
    assert!(!pool.pids().contains(&victim));
}

fn spindle_exec_kill(pid: u32, sig: i32) {
    // SAFETY: signalling a worker of this test's pool.
    unsafe { libc::kill(pid as libc::pid_t, sig) };
}

fn test_retries() {
    let pool = Pool::builder().processes(2).retries(1).build().unwrap();
    let m = tmp_marker("retry");
    assert_eq!(
        pool.apply_async(die_once, m.clone())
            .unwrap()
            .get_timeout(T)
            .unwrap(),
        "survived"
    );
    let _ = std::fs::remove_file(&m);
    // retries exhausted -> error
    assert_lost(
        pool.apply_async(die_on_3, 3).unwrap().get_timeout(T),
        libc::SIGKILL,
    );
}

// ---------------------------------------------------------------------------
// ThreadPool and threads.

fn test_thread_pool() {
    let pool = ThreadPool::with_threads(3).unwrap();
    let k = 10;
    assert_eq!(
        pool.map(move |x: i64| x + k, 0..5, None).unwrap(),
        vec![10, 11, 12, 13, 14]
    );
    assert_eq!(
        pool.apply_async(sqr, 9).unwrap().get_timeout(T).unwrap(),
        81
    );
    match pool.apply_async(fail_on_2, 2).unwrap().get_timeout(T) {
        Err(Error::Remote(e)) => assert!(e.message.contains("boom")),
        other => panic!("{other:?}"),
    }
    let mut it = pool.imap(sleep_ms, vec![300, 0], 1).unwrap();
    assert!(matches!(
        it.next_timeout(Duration::from_millis(10)),
        Some(Err(Error::Timeout))
    ));
    assert_eq!(it.map(|r| r.unwrap()).collect::<Vec<_>>(), vec![300, 0]);
    let mut u: Vec<i64> = pool
        .imap_unordered(sqr, 0..10, 3)
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    u.sort();
    assert_eq!(u.len(), 10);
    assert!(matches!(pool.join(), Err(Error::PoolRunning)));
    pool.close();
    assert!(matches!(
        pool.apply_async(sqr, 1),
        Err(Error::PoolNotRunning)
    ));
    pool.join_timeout(T).unwrap();
    let pool = ThreadPool::with_maxtasksperchild(2, 1).unwrap();
    assert_eq!(pool.map(sqr, 0..10, Some(1)).unwrap().len(), 10);
    pool.terminate();
    pool.join_timeout(T).unwrap();
}

struct Counter {
    upto: u32,
}

impl spindle_exec::Run for Counter {
    type Output = u32;
    fn run(self) -> u32 {
        (1..=self.upto).sum()
    }
}

fn test_threads() {
    let h = spindle_exec::spawn(|| 6 * 7).unwrap();
    assert_eq!(h.join().unwrap(), 42);
    let h = spindle_exec::spawn_run(Counter { upto: 10 }).unwrap();
    assert_eq!(h.join().unwrap(), 55);
    let h = spindle_exec::spawn(|| -> u8 { panic!("thread boom {ON_PURPOSE}") }).unwrap();
    assert!(matches!(h.join(), Err(Error::ThreadPanic(m)) if m.starts_with("thread boom")));
    let mut h = spindle_exec::spawn(|| std::thread::sleep(Duration::from_millis(300))).unwrap();
    assert!(matches!(
        h.join_timeout(Duration::from_millis(10)),
        Err(Error::Timeout)
    ));
    assert!(h.is_alive());
    h.join_timeout(T).unwrap();
}

fn main() {
    quiet_deliberate_panics();
    spindle_exec::testing::run_tests(&[
        ("process", test_process),
        ("sys_exit", test_sys_exit),
        ("terminate_kill", test_terminate_kill),
        ("close", test_close),
        ("subclassing", test_subclassing),
        ("orphans_die_with_parent", test_orphans_die_with_parent),
        ("queue_put_get", test_queue_put_get),
        ("queue_timeout_full", test_queue_timeout_full),
        ("queue_closed", test_queue_closed),
        ("queue_big_item", test_queue_big_item),
        ("connection", test_connection),
        ("duplex_false", test_duplex_false),
        ("shared_memory", test_shared_memory),
        ("shared_memory_threads", test_shared_memory_threads),
        ("lock", test_lock),
        ("lock_killed_holder", test_lock_killed_holder),
        ("rlock", test_rlock),
        ("pool_apply_map", test_pool_apply_map),
        ("make_pool", test_make_pool),
        ("async_timeout", test_async_timeout),
        ("imap", test_imap),
        (
            "imap_handle_iterable_exception",
            test_imap_handle_iterable_exception,
        ),
        ("imap_unordered", test_imap_unordered),
        ("traceback", test_traceback),
        ("map_no_failfast", test_map_no_failfast),
        ("unserializable_result", test_unserializable_result),
        ("async_callbacks", test_async_callbacks),
        ("pool_lifecycle", test_pool_lifecycle),
        ("pool_terminate", test_pool_terminate),
        ("pool_drop_terminates", test_pool_drop_terminates),
        ("pool_worker_lifetime", test_pool_worker_lifetime),
        ("initializer", test_initializer),
        ("killed_worker_mid_map", test_killed_worker_mid_map),
        ("abort_exit_overflow", test_abort_and_exit_and_overflow),
        ("crash_big_data", test_crash_big_data),
        (
            "sigterm_worker_mid_map_async",
            test_sigterm_worker_mid_map_async,
        ),
        ("retries", test_retries),
        ("thread_pool", test_thread_pool),
        ("threads", test_threads),
    ]);
}
