//! A control for the ThreadSanitizer run in docs/exec.md: two threads copy
//! to and from the same shared bytes. With no argument they use the atomic
//! `read`/`write` and TSan must stay quiet; with `unsync` they use the plain
//! `read_unsync`/`write_unsync` *against their contract* (the old safe
//! `read`/`write`), and TSan must report a data race. If it does not, the
//! sanitizer setup is not seeing races and a quiet run proves nothing.

use spindle_exec::SharedMemory;

fn main() {
    let unsync = std::env::args().nth(1).as_deref() == Some("unsync");
    let m = SharedMemory::new(64).unwrap();
    let writer = {
        let m = m.clone();
        std::thread::spawn(move || {
            for i in 0..2000u32 {
                let b = [i as u8; 32];
                if unsync {
                    // SAFETY: none — this breaks the contract on purpose, so
                    // that the sanitizer has a race to find.
                    unsafe { m.write_unsync(0, &b).unwrap() };
                } else {
                    m.write(0, &b).unwrap();
                }
            }
        })
    };
    let mut buf = [0u8; 32];
    for _ in 0..2000 {
        if unsync {
            // SAFETY: none, as above.
            unsafe { m.read_unsync(0, &mut buf).unwrap() };
        } else {
            m.read(0, &mut buf).unwrap();
        }
    }
    writer.join().unwrap();
    println!("last byte read: {}", buf[0]);
}
