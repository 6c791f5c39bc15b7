//! The file-descriptor budget: every connection, idle or not, and every DNS
//! socket is one descriptor. At start the soft `RLIMIT_NOFILE` is raised to
//! the hard limit, as servers that hold many sockets do.

/// The soft and hard `RLIMIT_NOFILE` after raising the soft one to the hard
/// one; `None` when the limits cannot be read.
pub fn raise_nofile_limit() -> Option<(libc::rlim_t, libc::rlim_t)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return None;
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit reads the struct we own; raising the soft limit up
        // to the hard one needs no privilege.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim = raised;
        }
    }
    Some((lim.rlim_cur, lim.rlim_max))
}

/// How many descriptors this process has open now (Linux `/proc/self/fd`).
pub fn open_descriptors() -> Option<usize> {
    std::fs::read_dir("/proc/self/fd")
        .ok()
        .map(|d| d.count().saturating_sub(1))
}
