//! `arqonbus tune`: the kernel settings a bus host needs, checked against the running system
//! and, on request, applied.
//!
//! The table here is the source of truth; `kernel-tuning/99-arqonbus.conf` (the sysctl.d file
//! the package installs) must agree with it, and a test holds them together. Each setting says
//! why it matters in one line; `kernel-tuning/GUIDE.md` says it at length, with the costs.
//!
//! Everything is read relative to a root directory (`/` on a real host), so tests run against
//! a fake `/proc/sys` tree.

use std::fmt::Write as _;
use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

/// The sysctl.d file shipped in the package, as installed in /usr/lib/sysctl.d/.
pub const SYSCTL_CONF: &str = include_str!("../../kernel-tuning/99-arqonbus.conf");

/// Why tuning could not be checked or applied.
#[derive(Debug, thiserror::Error)]
pub enum TuneError {
    #[error(
        "`tune --apply` changes kernel settings and must run as root (sudo arqonbus tune --apply)"
    )]
    NotRoot,
    #[error(
        "refusing to apply without confirmation: standard input is not a terminal (pass --yes to \
         apply without asking)"
    )]
    NoTty,
    #[error("cannot write {key} ({path}): {source}")]
    Write {
        key: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read the answer from standard input: {0}")]
    Prompt(std::io::Error),
}

/// What a setting must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// A single number, at least this.
    AtLeast(u64),
    /// A single number, at most this.
    AtMost(u64),
    /// A single number, exactly this.
    Exactly(u64),
    /// `kernel.io_uring_disabled`: 0; a missing file means a kernel before 6.6, where io_uring
    /// cannot be switched off by sysctl.
    ZeroOrAbsent,
    /// `low high`: a range starting at or below `low` and ending at or above `high`.
    PortRange { low: u64, high: u64 },
    /// `min default max` (tcp_rmem, tcp_wmem): the max at least this.
    MaxAtLeast(u64),
}

/// One recommended kernel setting.
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    /// The sysctl key, e.g. `net.core.somaxconn`.
    pub key: &'static str,
    pub want: Want,
    /// The value the sysctl.d file sets and `--apply` writes.
    pub value: &'static str,
    /// A required setting that is off makes `tune --check` fail.
    pub required: bool,
    /// Whether the sysctl.d file sets it. A file can only set a value, not "at least": settings
    /// whose kernel or systemd default is already far above the recommendation are only
    /// checked, so the file never lowers them.
    pub in_sysctl_file: bool,
    pub why: &'static str,
}

/// Every setting `tune` knows, in the order of the guide.
pub const SETTINGS: &[Setting] = &[
    Setting {
        key: "net.core.somaxconn",
        want: Want::AtLeast(4096),
        value: "4096",
        required: true,
        in_sysctl_file: true,
        why: "caps every listen backlog: below limits.listen_backlog (4096), connection bursts are dropped",
    },
    Setting {
        key: "net.ipv4.tcp_max_syn_backlog",
        want: Want::AtLeast(8192),
        value: "8192",
        required: false,
        in_sysctl_file: true,
        why: "half-open connections queued while a reconnect storm's handshakes complete",
    },
    Setting {
        key: "net.core.netdev_max_backlog",
        want: Want::AtLeast(16384),
        value: "16384",
        required: false,
        in_sysctl_file: true,
        why: "packets queued per core when the NIC delivers faster than the kernel processes",
    },
    Setting {
        key: "net.ipv4.ip_local_port_range",
        want: Want::PortRange {
            low: 10240,
            high: 65535,
        },
        value: "10240 65535",
        required: false,
        in_sysctl_file: true,
        why: "ephemeral ports for outbound connections (clients, sidecars, bench); starts above the bus's own ports",
    },
    Setting {
        key: "fs.file-max",
        want: Want::AtLeast(2097152),
        value: "2097152",
        required: true,
        in_sysctl_file: false,
        why: "system-wide open files: every connection and segment is one (kernels since 5.x default far higher)",
    },
    Setting {
        key: "fs.nr_open",
        want: Want::AtLeast(1048576),
        value: "1048576",
        required: true,
        in_sysctl_file: false,
        why: "the per-process ceiling for LimitNOFILE=1048576 in the unit (systemd raises it at boot)",
    },
    Setting {
        key: "net.core.rmem_max",
        want: Want::AtLeast(16777216),
        value: "16777216",
        required: false,
        in_sysctl_file: true,
        why: "largest receive buffer a socket may grow to (fast publishers on long links)",
    },
    Setting {
        key: "net.core.wmem_max",
        want: Want::AtLeast(16777216),
        value: "16777216",
        required: false,
        in_sysctl_file: true,
        why: "largest send buffer a socket may grow to (fan-out bursts to subscribers)",
    },
    Setting {
        key: "net.ipv4.tcp_rmem",
        want: Want::MaxAtLeast(16777216),
        value: "4096 131072 16777216",
        required: false,
        in_sysctl_file: true,
        why: "TCP receive buffer autotuning: min, default, max",
    },
    Setting {
        key: "net.ipv4.tcp_wmem",
        want: Want::MaxAtLeast(16777216),
        value: "4096 65536 16777216",
        required: false,
        in_sysctl_file: true,
        why: "TCP send buffer autotuning: min, default, max",
    },
    Setting {
        key: "net.ipv4.tcp_slow_start_after_idle",
        want: Want::Exactly(0),
        value: "0",
        required: false,
        in_sysctl_file: true,
        why: "a subscriber idle for a moment keeps its congestion window for the next burst",
    },
    Setting {
        key: "vm.max_map_count",
        want: Want::AtLeast(262144),
        value: "262144",
        required: true,
        in_sysctl_file: true,
        why: "memory maps per process: every retained segment and index is one (default 65530)",
    },
    Setting {
        key: "vm.swappiness",
        want: Want::AtMost(10),
        value: "1",
        required: false,
        in_sysctl_file: true,
        why: "keep reactors and mapped segments in memory instead of swapping them under pressure",
    },
    Setting {
        key: "kernel.io_uring_disabled",
        want: Want::ZeroOrAbsent,
        value: "0",
        required: true,
        in_sysctl_file: true,
        why: "glommio does all its I/O through io_uring; 1 or 2 stops the bus from starting",
    },
];

/// Locked memory: a process limit, not a sysctl, so it is reported but never written.
const MEMLOCK_KEY: &str = "memlock (this shell's RLIMIT_MEMLOCK)";

/// How a setting stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Ok,
    /// Off, and the bus needs it.
    Fail,
    /// Off; the bus runs, but worse under load.
    Advice,
    /// Could not be read.
    Unknown,
}

impl Verdict {
    fn label(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Fail => "FAIL (required)",
            Verdict::Advice => "advice",
            Verdict::Unknown => "unknown",
        }
    }
}

/// One line of the report.
#[derive(Debug, Clone)]
pub struct Finding {
    pub key: &'static str,
    /// The current value, whitespace-normalized; `None` when the file is absent.
    pub current: Option<String>,
    pub recommended: String,
    pub verdict: Verdict,
    pub why: &'static str,
    /// The setting, when `--apply` can fix it.
    pub setting: Option<&'static Setting>,
}

impl Want {
    /// How `current` (None: the file does not exist) stands against this; `None` when that
    /// cannot be told (absent, or not numbers of the expected shape).
    fn accepts(self, current: Option<&str>) -> Option<bool> {
        let Some(current) = current else {
            return (self == Want::ZeroOrAbsent).then_some(true);
        };
        let v: Vec<u64> = current
            .split_whitespace()
            .map(|n| n.parse().ok())
            .collect::<Option<_>>()?;
        match (self, v.as_slice()) {
            (Want::AtLeast(n), [x]) => Some(*x >= n),
            (Want::AtMost(n), [x]) => Some(*x <= n),
            (Want::Exactly(n), [x]) => Some(*x == n),
            (Want::ZeroOrAbsent, [x]) => Some(*x == 0),
            (Want::PortRange { low, high }, [l, h]) => Some(*l <= low && *h >= high),
            (Want::MaxAtLeast(n), [_, _, max]) => Some(*max >= n),
            _ => None,
        }
    }

    fn describe(self) -> String {
        match self {
            Want::AtLeast(n) => format!(">= {n}"),
            Want::AtMost(n) => format!("<= {n}"),
            Want::Exactly(n) => format!("{n}"),
            Want::ZeroOrAbsent => "0".to_owned(),
            Want::PortRange { low, high } => format!("<= {low} .. >= {high}"),
            Want::MaxAtLeast(n) => format!("max >= {n}"),
        }
    }
}

/// The file under `root` that holds a sysctl key.
pub fn sysctl_path(root: &Path, key: &str) -> PathBuf {
    root.join("proc/sys").join(key.replace('.', "/"))
}

fn read_value(path: &Path) -> Result<Option<String>, std::io::Error> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text.split_whitespace().collect::<Vec<_>>().join(" "))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Compares the system under `root` with every recommendation.
pub fn check(root: &Path) -> Vec<Finding> {
    let mut findings: Vec<Finding> = SETTINGS
        .iter()
        .map(|setting| {
            let (current, verdict) = match read_value(&sysctl_path(root, setting.key)) {
                Err(_) => (None, Verdict::Unknown),
                Ok(current) => {
                    let verdict = match setting.want.accepts(current.as_deref()) {
                        Some(true) => Verdict::Ok,
                        Some(false) if setting.required => Verdict::Fail,
                        Some(false) => Verdict::Advice,
                        None => Verdict::Unknown,
                    };
                    (current, verdict)
                }
            };
            Finding {
                key: setting.key,
                current,
                recommended: setting.want.describe(),
                verdict,
                why: setting.why,
                setting: Some(setting),
            }
        })
        .collect();
    findings.push(memlock(root));
    findings
}

/// RLIMIT_MEMLOCK of the process running `tune` (from `<root>/proc/self/limits`): what
/// `arqonbus serve` started from this shell would get. The unit sets LimitMEMLOCK=infinity.
fn memlock(root: &Path) -> Finding {
    let limits = std::fs::read_to_string(root.join("proc/self/limits")).unwrap_or_default();
    let current = limits
        .lines()
        .find(|l| l.starts_with("Max locked memory"))
        .and_then(|l| l.split_whitespace().nth(3))
        .map(str::to_owned);
    let verdict = match current.as_deref() {
        Some("unlimited") => Verdict::Ok,
        Some(n) => match n.parse::<u64>() {
            // glommio registers io.io_memory_bytes (1 MiB by default) per shard.
            Ok(bytes) if bytes >= 64 << 20 => Verdict::Ok,
            Ok(_) => Verdict::Advice,
            Err(_) => Verdict::Unknown,
        },
        None => Verdict::Unknown,
    };
    Finding {
        key: MEMLOCK_KEY,
        current,
        recommended: "unlimited".to_owned(),
        verdict,
        why: "io_uring registered memory is locked; the unit sets LimitMEMLOCK=infinity, a shell needs `ulimit -l`",
        setting: None,
    }
}

/// True when every required setting is right.
pub fn required_ok(findings: &[Finding]) -> bool {
    findings.iter().all(|f| f.verdict != Verdict::Fail)
}

/// The report `tune --check` prints.
pub fn report(findings: &[Finding]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<38} {:<24} {:<22} verdict",
        "setting", "current", "recommended"
    );
    for f in findings {
        let current = f.current.as_deref().unwrap_or("(absent)");
        let _ = writeln!(
            out,
            "{:<38} {:<24} {:<22} {}",
            f.key,
            current,
            f.recommended,
            f.verdict.label()
        );
        if f.verdict != Verdict::Ok {
            let _ = writeln!(out, "    {}", f.why);
        }
    }
    let failed = findings
        .iter()
        .filter(|f| f.verdict == Verdict::Fail)
        .count();
    let advice = findings
        .iter()
        .filter(|f| f.verdict == Verdict::Advice)
        .count();
    let _ = writeln!(
        out,
        "\n{failed} required setting(s) off, {advice} advised. See /usr/share/doc/arqonbus/kernel-tuning.md \
         (kernel-tuning/GUIDE.md in the source); `arqonbus tune --apply` writes them."
    );
    out
}

/// A change `--apply` would make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub key: &'static str,
    pub from: Option<String>,
    pub to: String,
    pub path: PathBuf,
}

/// The writes that would bring every off sysctl to its recommendation. Settings that are
/// already better than recommended are left alone; for `min default max` triples only the max
/// is raised.
pub fn plan(root: &Path, findings: &[Finding]) -> Vec<Change> {
    findings
        .iter()
        .filter(|f| matches!(f.verdict, Verdict::Fail | Verdict::Advice))
        .filter_map(|f| {
            let setting = f.setting?;
            let path = sysctl_path(root, setting.key);
            let to = match (setting.want, f.current.as_deref()) {
                (Want::MaxAtLeast(n), Some(current)) => {
                    let mut parts: Vec<String> =
                        current.split_whitespace().map(str::to_owned).collect();
                    if parts.len() != 3 {
                        return None;
                    }
                    parts[2] = n.to_string();
                    parts.join(" ")
                }
                // An absent file cannot be written: that kernel has no such setting.
                (_, None) => return None,
                _ => setting.value.to_owned(),
            };
            Some(Change {
                key: setting.key,
                from: f.current.clone(),
                to,
                path,
            })
        })
        .collect()
}

/// Writes `changes`.
pub fn apply(changes: &[Change]) -> Result<(), TuneError> {
    for c in changes {
        std::fs::write(&c.path, format!("{}\n", c.to)).map_err(|source| TuneError::Write {
            key: c.key,
            path: c.path.clone(),
            source,
        })?;
    }
    Ok(())
}

/// `arqonbus tune --check`: prints the report; returns whether every required setting is right.
pub fn run_check(root: &Path, out: &mut impl Write) -> std::io::Result<bool> {
    let findings = check(root);
    out.write_all(report(&findings).as_bytes())?;
    Ok(required_ok(&findings))
}

/// `arqonbus tune --apply`: shows the plan, asks (unless `yes`), writes, then checks again.
/// On the real root it needs root privileges; without `yes` it needs a terminal to ask on.
pub fn run_apply(
    root: &Path,
    yes: bool,
    input: &mut impl BufRead,
    input_is_tty: bool,
    out: &mut impl Write,
) -> Result<bool, TuneError> {
    let io = TuneError::Prompt;
    // SAFETY: geteuid has no preconditions.
    if root == Path::new("/") && unsafe { libc::geteuid() } != 0 {
        return Err(TuneError::NotRoot);
    }
    let changes = plan(root, &check(root));
    if changes.is_empty() {
        writeln!(
            out,
            "nothing to change: every setting is at or past its recommendation"
        )
        .map_err(io)?;
        return run_check(root, out).map_err(io);
    }
    for c in &changes {
        writeln!(
            out,
            "{:<38} {} -> {}",
            c.key,
            c.from.as_deref().unwrap_or("(absent)"),
            c.to
        )
        .map_err(io)?;
    }
    if !yes {
        if !input_is_tty {
            return Err(TuneError::NoTty);
        }
        write!(
            out,
            "apply these {} change(s) to the running kernel? [y/N] ",
            changes.len()
        )
        .map_err(io)?;
        out.flush().map_err(io)?;
        let mut answer = String::new();
        input.read_line(&mut answer).map_err(io)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            writeln!(out, "nothing changed").map_err(io)?;
            return Ok(false);
        }
    }
    apply(&changes)?;
    writeln!(
        out,
        "applied to the running kernel. To keep them across reboots, install the sysctl file \
         (the package puts it in /usr/lib/sysctl.d/99-arqonbus.conf).\n"
    )
    .map_err(io)?;
    run_check(root, out).map_err(io)
}

/// Whether standard input is a terminal (for `run_apply`).
pub fn stdin_is_tty() -> bool {
    std::io::stdin().is_terminal()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake root with every setting at the given values (None: leave the file out).
    fn fake_root(values: &[(&str, Option<&str>)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (key, value) in values {
            if let Some(value) = value {
                let path = sysctl_path(dir.path(), key);
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(path, format!("{value}\n")).unwrap();
            }
        }
        dir
    }

    /// Debian 12 defaults on a 24 GiB machine, as the kernel prints them (tabs included).
    fn stock() -> Vec<(&'static str, Option<&'static str>)> {
        vec![
            ("net.core.somaxconn", Some("4096")),
            ("net.ipv4.tcp_max_syn_backlog", Some("1024")),
            ("net.core.netdev_max_backlog", Some("1000")),
            ("net.ipv4.ip_local_port_range", Some("32768\t60999")),
            ("fs.file-max", Some("9223372036854775807")),
            ("fs.nr_open", Some("1048576")),
            ("net.core.rmem_max", Some("212992")),
            ("net.core.wmem_max", Some("212992")),
            ("net.ipv4.tcp_rmem", Some("4096\t131072\t6291456")),
            ("net.ipv4.tcp_wmem", Some("4096\t16384\t4194304")),
            ("net.ipv4.tcp_slow_start_after_idle", Some("1")),
            ("vm.max_map_count", Some("65530")),
            ("vm.swappiness", Some("60")),
            ("kernel.io_uring_disabled", Some("0")),
        ]
    }

    fn verdict(findings: &[Finding], key: &str) -> (Option<String>, Verdict) {
        let f = findings.iter().find(|f| f.key == key).unwrap();
        (f.current.clone(), f.verdict)
    }

    #[test]
    fn stock_kernel_reports_each_setting_right() {
        let root = fake_root(&stock());
        let f = check(root.path());
        assert_eq!(f.len(), SETTINGS.len() + 1);
        let ok = |v: &str| (Some(v.to_owned()), Verdict::Ok);
        let advice = |v: &str| (Some(v.to_owned()), Verdict::Advice);
        assert_eq!(verdict(&f, "net.core.somaxconn"), ok("4096"));
        assert_eq!(verdict(&f, "net.ipv4.tcp_max_syn_backlog"), advice("1024"));
        assert_eq!(verdict(&f, "net.core.netdev_max_backlog"), advice("1000"));
        assert_eq!(
            verdict(&f, "net.ipv4.ip_local_port_range"),
            advice("32768 60999")
        );
        assert_eq!(verdict(&f, "fs.file-max"), ok("9223372036854775807"));
        assert_eq!(verdict(&f, "fs.nr_open"), ok("1048576"));
        assert_eq!(verdict(&f, "net.core.rmem_max"), advice("212992"));
        assert_eq!(
            verdict(&f, "net.ipv4.tcp_rmem"),
            advice("4096 131072 6291456")
        );
        assert_eq!(
            verdict(&f, "net.ipv4.tcp_slow_start_after_idle"),
            advice("1")
        );
        assert_eq!(
            verdict(&f, "vm.max_map_count"),
            (Some("65530".into()), Verdict::Fail)
        );
        assert_eq!(verdict(&f, "vm.swappiness"), advice("60"));
        assert_eq!(verdict(&f, "kernel.io_uring_disabled"), ok("0"));
        assert!(!required_ok(&f), "max_map_count is required");
        let text = report(&f);
        assert!(text.contains("vm.max_map_count"), "{text}");
        assert!(text.contains("FAIL (required)"), "{text}");
    }

    #[test]
    fn io_uring_switch_absent_is_fine_and_disabled_fails() {
        let mut values = stock();
        values.retain(|(k, _)| *k != "kernel.io_uring_disabled");
        let root = fake_root(&values);
        let f = check(root.path());
        assert_eq!(verdict(&f, "kernel.io_uring_disabled"), (None, Verdict::Ok));

        for disabled in ["1", "2"] {
            let mut values = stock();
            values.push(("kernel.io_uring_disabled", Some(disabled)));
            values.retain(|(k, v)| *k != "kernel.io_uring_disabled" || *v == Some(disabled));
            let root = fake_root(&values);
            let f = check(root.path());
            assert_eq!(
                verdict(&f, "kernel.io_uring_disabled"),
                (Some(disabled.into()), Verdict::Fail)
            );
        }
    }

    #[test]
    fn missing_and_garbled_values_are_unknown_not_ok() {
        let mut values = stock();
        values.retain(|(k, _)| *k != "vm.max_map_count");
        values.push(("vm.max_map_count", None));
        values.retain(|(k, _)| *k != "vm.swappiness");
        values.push(("vm.swappiness", Some("lots")));
        let root = fake_root(&values);
        let f = check(root.path());
        assert_eq!(verdict(&f, "vm.max_map_count"), (None, Verdict::Unknown));
        assert_eq!(verdict(&f, "vm.swappiness").1, Verdict::Unknown);
    }

    #[test]
    fn applying_brings_everything_to_ok_and_keeps_better_values() {
        let mut values = stock();
        values.retain(|(k, _)| *k != "net.core.somaxconn");
        values.push(("net.core.somaxconn", Some("65535")));
        let root = fake_root(&values);
        let mut out = Vec::new();
        let ok = run_apply(root.path(), true, &mut &b""[..], false, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(ok, "{text}");
        let f = check(root.path());
        for finding in f.iter().filter(|f| f.setting.is_some()) {
            assert_eq!(finding.verdict, Verdict::Ok, "{}", finding.key);
        }
        let read = |k| read_value(&sysctl_path(root.path(), k)).unwrap().unwrap();
        assert_eq!(
            read("net.core.somaxconn"),
            "65535",
            "a better value is kept"
        );
        assert_eq!(read("net.ipv4.tcp_rmem"), "4096 131072 16777216");
        assert_eq!(
            read("net.ipv4.tcp_wmem"),
            "4096 16384 16777216",
            "min and default kept"
        );
        assert_eq!(read("vm.swappiness"), "1");
    }

    #[test]
    fn apply_asks_and_refuses_without_a_terminal() {
        let root = fake_root(&stock());
        let mut out = Vec::new();
        let err = run_apply(root.path(), false, &mut &b""[..], false, &mut out).unwrap_err();
        assert!(matches!(err, TuneError::NoTty), "{err}");
        // On a terminal, anything but yes changes nothing.
        let changed = run_apply(root.path(), false, &mut &b"n\n"[..], true, &mut out).unwrap();
        assert!(!changed);
        assert_eq!(
            verdict(&check(root.path()), "vm.swappiness").1,
            Verdict::Advice
        );
        run_apply(root.path(), false, &mut &b"y\n"[..], true, &mut out).unwrap();
        assert_eq!(verdict(&check(root.path()), "vm.swappiness").1, Verdict::Ok);
    }

    #[test]
    fn memlock_is_read_from_the_process_limits() {
        let root = fake_root(&stock());
        std::fs::create_dir_all(root.path().join("proc/self")).unwrap();
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max locked memory         8388608              8388608              bytes     \n";
        std::fs::write(root.path().join("proc/self/limits"), limits).unwrap();
        let f = check(root.path());
        assert_eq!(
            verdict(&f, MEMLOCK_KEY),
            (Some("8388608".into()), Verdict::Advice)
        );
        std::fs::write(
            root.path().join("proc/self/limits"),
            limits.replace(
                "8388608              8388608",
                "unlimited            unlimited",
            ),
        )
        .unwrap();
        assert_eq!(verdict(&check(root.path()), MEMLOCK_KEY).1, Verdict::Ok);
    }

    #[test]
    fn shipped_sysctl_file_matches_the_table() {
        let mut seen = Vec::new();
        for line in SYSCTL_CONF.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (key, value) = line.split_once('=').expect("key = value");
            let (key, value) = (key.trim(), value.trim());
            let setting = SETTINGS
                .iter()
                .find(|s| s.key == key)
                .unwrap_or_else(|| panic!("{key} is in the sysctl file but not in tune"));
            assert_eq!(value, setting.value, "{key}");
            assert_eq!(setting.want.accepts(Some(value)), Some(true), "{key}");
            seen.push(key);
        }
        for s in SETTINGS {
            assert_eq!(
                seen.contains(&s.key),
                s.in_sysctl_file,
                "{}: in 99-arqonbus.conf exactly when in_sysctl_file",
                s.key
            );
        }
    }
}
