//! Python:
//! ```python
//! def f(name): print(f'hello {name}')
//! p = Process(target=f, args=('john',)); p.start(); p.join()
//! ```
use spindle_exec::Process;
use std::time::Duration;

fn f(name: String) {
    println!("hello {name}");
}

fn main() -> spindle_exec::Result<()> {
    spindle_exec::init(); // first line of main: runs the worker when this binary is a child
    let mut p = Process::new(f, "john".to_string());
    p.start()?;
    let code = p.join_timeout(Duration::from_secs(30))?;
    println!("exit code: {code:?}");
    Ok(())
}
