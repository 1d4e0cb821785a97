//! The few operating-system facts the harness needs: the open-file limit, a process's resident
//! memory, and timer slack for the open-loop sender.

use std::io;

/// The open-file limit after raising the soft limit to the hard one.
#[derive(Debug, Clone, Copy)]
pub struct FileLimit {
    pub soft: u64,
    pub hard: u64,
    /// The soft limit before this process raised it.
    pub original_soft: u64,
}

/// Raises RLIMIT_NOFILE's soft limit to its hard limit (no privilege needed).
pub fn raise_nofile_limit() -> io::Result<FileLimit> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct we own; the resource constant is valid.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let original_soft = lim.rlim_cur;
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
        // SAFETY: setrlimit only reads the struct; raising soft up to hard needs no privilege.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            return Err(io::Error::last_os_error());
        }
        lim = raised;
    }
    Ok(FileLimit { soft: lim.rlim_cur, hard: lim.rlim_max, original_soft })
}

/// Files this process has open now.
pub fn open_files() -> io::Result<u64> {
    Ok(std::fs::read_dir("/proc/self/fd")?.count() as u64)
}

/// Resident set size of `pid` in bytes, from `VmRSS` in /proc/PID/status.
pub fn rss_bytes(pid: u32) -> io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    parse_status_kib(&status, "VmRSS:")
        .map(|kib| kib * 1024)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no VmRSS line"))
}

fn parse_status_kib(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// Asks the kernel to wake this thread's sleeps within `ns` of the deadline instead of the
/// default 50 µs slack, so the open-loop sender can keep a sub-millisecond schedule.
pub fn set_thread_timer_slack_ns(ns: u64) {
    // SAFETY: PR_SET_TIMERSLACK takes an unsigned long and affects only the calling thread.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, ns as libc::c_ulong, 0, 0, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_rss_from_status_text() {
        let status = "Name:\tx\nVmPeak:\t  100 kB\nVmRSS:\t   2048 kB\nThreads:\t1\n";
        assert_eq!(parse_status_kib(status, "VmRSS:"), Some(2048));
        assert_eq!(parse_status_kib(status, "VmHWM:"), None);
        assert!(rss_bytes(std::process::id()).unwrap() > 0);
    }

    #[test]
    fn soft_limit_reaches_the_hard_limit() {
        let lim = raise_nofile_limit().unwrap();
        assert_eq!(lim.soft, lim.hard);
        assert!(open_files().unwrap() > 0);
    }
}
