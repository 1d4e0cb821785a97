//! `arqonbus tune --check --root DIR` reads DIR/proc/sys, prints every setting with its current
//! value and verdict, and exits non-zero while a required one is off; `--apply --yes` fixes it.

use std::path::Path;
use std::process::{Command, Output, Stdio};

fn write(root: &Path, key: &str, value: &str) {
    let path = root.join("proc/sys").join(key.replace('.', "/"));
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, format!("{value}\n")).unwrap();
}

fn tune(root: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_arqonbus"))
        .arg("tune")
        .args(args)
        .arg("--root")
        .arg(root)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// The line of the report for `key`, split into columns.
fn row(report: &str, key: &str) -> Vec<String> {
    let line = report
        .lines()
        .find(|l| l.split_whitespace().next() == Some(key))
        .unwrap_or_else(|| panic!("no row for {key} in\n{report}"));
    line.split_whitespace().map(str::to_owned).collect()
}

#[test]
fn tune_check_against_fake_proc_sys() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for (key, value) in [
        ("net.core.somaxconn", "4096"),
        ("net.ipv4.tcp_max_syn_backlog", "1024"),
        ("net.core.netdev_max_backlog", "1000"),
        ("net.ipv4.ip_local_port_range", "32768\t60999"),
        ("fs.file-max", "9223372036854775807"),
        ("fs.nr_open", "1048576"),
        ("net.core.rmem_max", "212992"),
        ("net.core.wmem_max", "212992"),
        ("net.ipv4.tcp_rmem", "4096\t131072\t6291456"),
        ("net.ipv4.tcp_wmem", "4096\t16384\t4194304"),
        ("net.ipv4.tcp_slow_start_after_idle", "1"),
        ("vm.max_map_count", "65530"),
        ("vm.swappiness", "60"),
        ("kernel.io_uring_disabled", "2"),
    ] {
        write(root, key, value);
    }

    let out = tune(root, &["--check"]);
    let report = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "required settings are off:\n{report}"
    );
    assert_eq!(
        row(&report, "net.core.somaxconn"),
        ["net.core.somaxconn", "4096", ">=", "4096", "ok"]
    );
    assert_eq!(
        row(&report, "vm.max_map_count")[1..],
        ["65530", ">=", "262144", "FAIL", "(required)"]
    );
    assert_eq!(
        row(&report, "kernel.io_uring_disabled")[1..],
        ["2", "0", "FAIL", "(required)"]
    );
    assert_eq!(
        row(&report, "vm.swappiness")[1..],
        ["60", "<=", "10", "advice"]
    );
    assert_eq!(
        row(&report, "net.ipv4.ip_local_port_range")[1..3],
        ["32768", "60999"]
    );
    assert_eq!(row(&report, "net.ipv4.tcp_rmem").last().unwrap(), "advice");
    assert!(report.contains("2 required setting(s) off"), "{report}");

    // Without --yes and without a terminal, apply refuses and changes nothing.
    let out = tune(root, &["--apply"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--yes"));
    let unchanged = std::fs::read_to_string(root.join("proc/sys/vm/max_map_count")).unwrap();
    assert_eq!(unchanged.trim(), "65530");

    let out = tune(root, &["--apply", "--yes"]);
    let report = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{report}");
    let out = tune(root, &["--check"]);
    let report = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{report}");
    assert!(
        report.contains("0 required setting(s) off, 0 advised"),
        "{report}"
    );
}
