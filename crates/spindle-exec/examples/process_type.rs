//! Python:
//! ```python
//! class NewProcess(Process):
//!     def __init__(self, num): self.num = num; super().__init__()
//!     def run(self): print(f'I am process {self.num}, my pid is {os.getpid()}')
//! lock = multiprocessing.Lock(); lock.acquire(); lock.release()
//! ```
use serde::{Deserialize, Serialize};
use spindle_exec::{Lock, Process, ProcessTarget};
use std::time::Duration;

#[derive(Serialize, Deserialize)]
struct NewProcess {
    num: u32,
    lock: Lock,
}

impl ProcessTarget for NewProcess {
    fn run(self) {
        // The lock is shared with the parent and the siblings; printing under it.
        let _guard = self
            .lock
            .lock_timeout(Duration::from_secs(10))
            .expect("lock");
        println!(
            "I am process {}, my pid is {}",
            self.num,
            std::process::id()
        );
    }
}

fn main() -> spindle_exec::Result<()> {
    spindle_exec::init();
    let lock = Lock::new()?;
    lock.acquire()?;
    lock.release()?;
    let mut procs: Vec<Process> = (0..3)
        .map(|num| {
            Process::from_target(NewProcess {
                num,
                lock: lock.clone(),
            })
        })
        .collect();
    for p in &mut procs {
        p.start()?;
    }
    for p in &mut procs {
        p.join_timeout(Duration::from_secs(30))?;
    }
    Ok(())
}
