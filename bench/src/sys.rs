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
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own; the resource constant is valid.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let original_soft = lim.rlim_cur;
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit only reads the struct; raising soft up to hard needs no privilege.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            return Err(io::Error::last_os_error());
        }
        lim = raised;
    }
    Ok(FileLimit {
        soft: lim.rlim_cur,
        hard: lim.rlim_max,
        original_soft,
    })
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

/// CPU time counters at one instant, in clock ticks: the whole machine's, this process's and
/// (when known) the server's.
#[derive(Debug, Clone, Copy)]
pub struct CpuSnapshot {
    at: std::time::Instant,
    /// user + nice + system over all CPUs: time processes ran.
    machine_tasks: u64,
    /// irq + softirq: interrupt work (on loopback, much of the TCP stack) charged to no process.
    machine_interrupts: u64,
    /// Time the hypervisor ran something else while this machine's CPUs wanted to run.
    machine_steal: u64,
    harness: u64,
    server: Option<u64>,
}

/// Average CPU use over an interval, in cores (1.0 = one core busy all the time).
#[derive(Debug, Clone, Copy, Default, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct CpuUse {
    pub machine_cores: f64,
    pub harness: f64,
    pub server: Option<f64>,
    /// Other processes. With no server PID, the server is inside this.
    pub other: f64,
    /// Interrupt and softirq work, which the kernel charges to no process: on loopback this is
    /// largely TCP delivery for the harness and the server.
    #[serde(default)]
    pub interrupts: f64,
    /// Time taken by the hypervisor (virtual machines only).
    #[serde(default)]
    pub steal: f64,
}

impl CpuSnapshot {
    pub fn take(server_pid: Option<u32>) -> Option<CpuSnapshot> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let fields: Vec<u64> = stat
            .lines()
            .next()?
            .split_whitespace()
            .skip(1)
            .filter_map(|f| f.parse().ok())
            .collect();
        // user nice system idle iowait irq softirq steal ...
        let f = |i: usize| fields.get(i).copied().unwrap_or(0);
        Some(CpuSnapshot {
            at: std::time::Instant::now(),
            machine_tasks: f(0) + f(1) + f(2),
            machine_interrupts: f(5) + f(6),
            machine_steal: f(7),
            harness: process_ticks("self")?,
            server: server_pid.and_then(|p| process_ticks(&p.to_string())),
        })
    }

    /// Seconds between `self` (earlier) and `later`: the window [`CpuSnapshot::until`]
    /// averages over.
    pub fn secs_until(&self, later: &CpuSnapshot) -> f64 {
        later.at.duration_since(self.at).as_secs_f64().max(1e-3)
    }

    /// Average use between `self` (earlier) and `later`.
    pub fn until(&self, later: &CpuSnapshot) -> CpuUse {
        // SAFETY: sysconf has no preconditions.
        let ticks_per_s = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        let secs = later.at.duration_since(self.at).as_secs_f64().max(1e-3);
        let cores = |ticks: u64| ticks as f64 / ticks_per_s / secs;
        let tasks = cores(later.machine_tasks.saturating_sub(self.machine_tasks));
        let harness = cores(later.harness.saturating_sub(self.harness));
        let server = match (self.server, later.server) {
            (Some(a), Some(b)) => Some(cores(b.saturating_sub(a))),
            _ => None,
        };
        CpuUse {
            machine_cores: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1) as f64,
            harness,
            server,
            other: (tasks - harness - server.unwrap_or(0.0)).max(0.0),
            interrupts: cores(
                later
                    .machine_interrupts
                    .saturating_sub(self.machine_interrupts),
            ),
            steal: cores(later.machine_steal.saturating_sub(self.machine_steal)),
        }
    }
}

/// utime + stime of /proc/WHO/stat, in clock ticks.
fn process_ticks(who: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{who}/stat")).ok()?;
    // The command name (field 2) may hold spaces; count fields after its closing parenthesis.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of the whole line are the 12th and 13th after the name.
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// Nanoseconds each live thread of a process has run, from /proc/PID/task/*/schedstat (its
/// first field, the scheduler's own run-time sum): exact, where /proc/PID/stat counts 10 ms
/// ticks. A thread that exits between two readings takes its time with it, so
/// [`ThreadCpu::ns_until`] says when that happened and the caller falls back to ticks.
#[derive(Debug, Clone)]
pub struct ThreadCpu {
    ns_by_thread: std::collections::BTreeMap<u32, u64>,
}

impl ThreadCpu {
    pub fn take(pid: u32) -> Option<ThreadCpu> {
        let mut ns_by_thread = std::collections::BTreeMap::new();
        for entry in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
            let Ok(entry) = entry else { continue };
            let Some(tid) = entry.file_name().to_str().and_then(|t| t.parse().ok()) else {
                continue;
            };
            // A thread that exits while the directory is read has no schedstat left to read.
            let Ok(text) = std::fs::read_to_string(entry.path().join("schedstat")) else {
                continue;
            };
            if let Some(ns) = parse_schedstat_ns(&text) {
                ns_by_thread.insert(tid, ns);
            }
        }
        (!ns_by_thread.is_empty()).then_some(ThreadCpu { ns_by_thread })
    }

    /// CPU nanoseconds the process used between `self` (earlier) and `later`; `None` when a
    /// thread of the earlier reading is gone (its last stretch of run time is unknown).
    pub fn ns_until(&self, later: &ThreadCpu) -> Option<u64> {
        let mut total = 0u64;
        for (tid, &before) in &self.ns_by_thread {
            total += later.ns_by_thread.get(tid)?.saturating_sub(before);
        }
        // Threads born in between ran only inside the window.
        total += later
            .ns_by_thread
            .iter()
            .filter(|(tid, _)| !self.ns_by_thread.contains_key(tid))
            .map(|(_, &ns)| ns)
            .sum::<u64>();
        Some(total)
    }
}

fn parse_schedstat_ns(text: &str) -> Option<u64> {
    text.split_whitespace().next()?.parse().ok()
}

/// utime + stime of process `pid` in nanoseconds (10 ms resolution).
pub fn process_cpu_ns_from_ticks(pid: u32) -> Option<u64> {
    // SAFETY: sysconf has no preconditions.
    let ticks_per_s = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Some(process_ticks(&pid.to_string())? * 1_000_000_000 / ticks_per_s)
}

/// Asks the kernel to wake this thread's sleeps within `ns` of the deadline instead of the
/// default 50 µs slack, so the open-loop sender can keep a sub-millisecond schedule.
pub fn set_thread_timer_slack_ns(ns: u64) {
    // SAFETY: PR_SET_TIMERSLACK takes an unsigned long and affects only the calling thread.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, ns as libc::c_ulong, 0, 0, 0);
    }
}

/// Gives the calling thread the nice value `nice` (Linux nice values are per thread). Raising
/// it (a lower priority) needs no privilege.
pub fn set_thread_nice(nice: i32) -> io::Result<()> {
    // SAFETY: gettid has no preconditions; setpriority with PRIO_PROCESS and a thread id
    // changes only that thread's nice value.
    let r = unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice)
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
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
    fn cpu_use_counts_this_process() {
        let pid = Some(std::process::id());
        let a = CpuSnapshot::take(pid).unwrap();
        let t = std::time::Instant::now();
        let mut x = 0u64;
        while t.elapsed() < std::time::Duration::from_millis(300) {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        let u = a.until(&CpuSnapshot::take(pid).unwrap());
        assert!(x > 0);
        // Loose bounds: on a busy machine this thread gets less than a whole core, and the
        // other tests of this binary run beside it in the same process (one spins too), so the
        // process may use every core but never more.
        assert!(
            u.harness > 0.1 && u.harness <= u.machine_cores + 0.05,
            "{u:?}"
        );
        assert!((u.server.unwrap() - u.harness).abs() < 0.2, "{u:?}");
    }

    #[test]
    fn thread_cpu_sums_threads_and_notices_one_that_exited() {
        assert_eq!(
            parse_schedstat_ns("233749164 162168725 78\n"),
            Some(233_749_164)
        );
        let cpu = |pairs: &[(u32, u64)]| ThreadCpu {
            ns_by_thread: pairs.iter().copied().collect(),
        };
        let a = cpu(&[(1, 100), (2, 50)]);
        // Thread 3 was born in between: all its time is inside the window.
        assert_eq!(a.ns_until(&cpu(&[(1, 300), (2, 60), (3, 5)])), Some(215));
        assert_eq!(a.ns_until(&cpu(&[(1, 400)])), None);
    }

    #[test]
    fn thread_cpu_counts_this_thread_in_nanoseconds() {
        // Only this thread: the test harness's other threads come and go.
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() } as u32;
        let pid = std::process::id();
        let a = ThreadCpu::take(pid).unwrap().ns_by_thread[&tid];
        let t = std::time::Instant::now();
        let mut x = 0u64;
        while t.elapsed() < std::time::Duration::from_millis(200) {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        let b = ThreadCpu::take(pid).unwrap().ns_by_thread[&tid];
        assert!(x > 0);
        // Loose bounds: on a busy machine this thread gets less than a whole core.
        assert!(b - a > 20_000_000 && b - a < 1_000_000_000, "{}", b - a);
        assert!(process_cpu_ns_from_ticks(pid).unwrap() > 0);
    }

    #[test]
    fn a_thread_can_lower_its_own_priority() {
        std::thread::spawn(|| {
            // SAFETY: getpriority has no preconditions; 0 means the calling thread.
            let nice = || unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
            let wanted = (nice() + 3).min(19);
            set_thread_nice(wanted).unwrap();
            assert_eq!(nice(), wanted);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn soft_limit_reaches_the_hard_limit() {
        let lim = raise_nofile_limit().unwrap();
        assert_eq!(lim.soft, lim.hard);
        assert!(open_files().unwrap() > 0);
    }
}
