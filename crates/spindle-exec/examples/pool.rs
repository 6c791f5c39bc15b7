//! Python:
//! ```python
//! with Pool(processes=4) as pool:
//!     print(pool.map(f, range(10)))
//!     it = pool.imap(f, range(10)); print(next(it)); print(it.next(timeout=1))
//!     res = pool.apply_async(os.getpid, ()); print(res.get(timeout=1))
//!     pool.close(); pool.join()
//! ```
use spindle_exec::Pool;
use std::time::Duration;

fn f(x: u64) -> u64 {
    x * x
}

fn getpid(_: ()) -> u32 {
    std::process::id()
}

fn main() -> spindle_exec::Result<()> {
    spindle_exec::init();
    let pool = Pool::with_processes(4)?;
    println!("{:?}", pool.map(f, 0..10, None)?);
    let mut it = pool.imap(f, 0..10, 1)?;
    println!("{:?}", it.next());
    println!("{:?}", it.next_timeout(Duration::from_secs(1)));
    let res = pool.apply_async(getpid, ())?;
    println!("{}", res.get_timeout(Duration::from_secs(1))?);
    // A worker that dies does not hang the pool: the task fails, the pool goes on.
    let lost = pool.apply_async(|_: ()| -> u32 { std::process::abort() }, ())?;
    println!("{:?}", lost.get_timeout(Duration::from_secs(10)));
    pool.close();
    pool.join_timeout(Duration::from_secs(10))?;
    Ok(())
}
