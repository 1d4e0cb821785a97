//! `systemd/arqonbus.service` is a unit systemd accepts (`systemd-analyze verify`, with no
//! warning either) and keeps the promises the appliance makes: notify with a watchdog, the
//! limits a bus needs, a dedicated user, and hardening that still lets wasmtime compile code.

use std::path::Path;
use std::process::Command;

const UNIT: &str = include_str!("../systemd/arqonbus.service");

/// `key=value` settings of the unit, in order (comments and sections dropped).
fn settings() -> Vec<(&'static str, &'static str)> {
    UNIT.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with('['))
        .map(|l| l.split_once('=').expect("key=value"))
        .collect()
}

fn get(key: &str) -> Vec<&'static str> {
    settings()
        .into_iter()
        .filter(|(k, _)| *k == key)
        .map(|(_, v)| v)
        .collect()
}

#[test]
fn unit_keeps_the_appliance_promises() {
    assert_eq!(get("Type"), ["notify"]);
    assert_eq!(get("NotifyAccess"), ["main"]);
    assert_eq!(get("Restart"), ["on-failure"]);
    assert_eq!(get("LimitMEMLOCK"), ["infinity"]);
    assert_eq!(get("LimitNOFILE"), ["1048576"]);
    assert_eq!(get("User"), ["arqonbus"]);
    assert_eq!(get("StateDirectory"), ["arqonbus"]);
    assert_eq!(
        get("ExecStart"),
        ["/usr/bin/arqonbus serve --config /etc/arqonbus/arqonbus.toml"]
    );
    assert!(!get("WatchdogSec").is_empty());
    for hardening in [
        "NoNewPrivileges",
        "ProtectSystem",
        "PrivateTmp",
        "RestrictAddressFamilies",
        "ProtectHome",
        "SystemCallFilter",
    ] {
        assert!(!get(hardening).is_empty(), "{hardening} is set");
    }
    // wasmtime's JIT needs writable-then-executable pages.
    assert!(get("MemoryDenyWriteExecute").is_empty());
    assert!(
        UNIT.contains("No MemoryDenyWriteExecute="),
        "the reason is written down"
    );
    // The drain (limits.shutdown_drain_ms, 5 s by default) fits in the stop timeout.
    assert_eq!(get("TimeoutStopSec"), ["30s"]);
}

/// Runs `systemd-analyze verify` on the unit inside a scratch root that holds the system's unit
/// files and the built binary at /usr/bin/arqonbus (verify checks that ExecStart exists).
#[test]
fn systemd_analyze_verify_accepts_the_unit() {
    let Ok(version) = Command::new("systemd-analyze").arg("--version").output() else {
        // CI installs systemd (tests/run-all.sh); elsewhere the check is skipped, loudly.
        assert!(
            std::env::var_os("CI").is_none(),
            "systemd-analyze is required in CI (apt-get install systemd)"
        );
        eprintln!("SKIPPED: systemd-analyze is not installed");
        return;
    };
    assert!(version.status.success());
    let root = tempfile::tempdir().unwrap();
    let units = ["/lib/systemd/system", "/usr/lib/systemd/system"]
        .into_iter()
        .find(|p| Path::new(p).join("multi-user.target").exists())
        .expect("the system's unit files");
    let copy = |from: &Path, to: &Path| {
        let status = Command::new("cp")
            .arg("-a")
            .arg(from)
            .arg(to)
            .status()
            .unwrap();
        assert!(status.success());
    };
    std::fs::create_dir_all(root.path().join("lib/systemd")).unwrap();
    copy(Path::new(units), &root.path().join("lib/systemd/system"));
    std::fs::create_dir_all(root.path().join("usr/bin")).unwrap();
    std::fs::copy(
        env!("CARGO_BIN_EXE_arqonbus"),
        root.path().join("usr/bin/arqonbus"),
    )
    .unwrap();
    let system = root.path().join("etc/systemd/system");
    std::fs::create_dir_all(&system).unwrap();
    std::fs::write(system.join("arqonbus.service"), UNIT).unwrap();

    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg("--man=no")
        .arg(format!("--root={}", root.path().display()))
        .arg("arqonbus.service")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{stderr}");
    // verify exits 0 on unknown keys and bad values (it only warns): any output is a failure.
    assert!(
        stderr.trim().is_empty() && stdout.trim().is_empty(),
        "{stdout}{stderr}"
    );
}
