//! Python:
//! ```python
//! t = threading.Thread(target=f, args=('bob',)); t.start(); t.join()
//! class MyThread(threading.Thread):
//!     def run(self): ...
//! ```
use spindle_exec::{spawn, spawn_run, Run, ThreadPool};
use std::time::Duration;

struct MyThread {
    name: String,
}

impl Run for MyThread {
    type Output = usize;
    fn run(self) -> usize {
        println!("hello from a thread type, {}", self.name);
        self.name.len()
    }
}

fn main() -> spindle_exec::Result<()> {
    let name = "bob".to_string();
    let t = spawn(move || println!("hello {name}"))?;
    t.join()?;
    let t = spawn_run(MyThread {
        name: "alice".into(),
    })?;
    println!("run returned {}", t.join()?);
    let failing = spawn(|| -> () { panic!("oops") })?;
    println!("join of a panicking thread: {:?}", failing.join());
    let pool = ThreadPool::with_threads(2)?;
    let offset = 100;
    println!("{:?}", pool.map(move |x: u32| x + offset, 0..5, None)?);
    pool.close();
    pool.join_timeout(Duration::from_secs(5))?;
    Ok(())
}
