//! `systemd/arqonbus-sidecar.service` is a unit systemd accepts (`systemd-analyze verify`, no
//! warning), and the configuration it names (`systemd/arqonbus-sidecar.toml`) passes `--check`.

use std::path::Path;
use std::process::Command;

const UNIT: &str = include_str!("../../systemd/arqonbus-sidecar.service");
const CONFIG: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../systemd/arqonbus-sidecar.toml"
);

#[test]
fn the_packaged_configuration_checks_clean() {
    let out = Command::new(env!("CARGO_BIN_EXE_arqonbus-sidecar"))
        .args(["--config", CONFIG, "--check"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(
        UNIT.contains("ExecStart=/usr/bin/arqonbus-sidecar --config /etc/arqonbus/sidecar.toml\n")
    );
}

/// Verifies the unit inside a scratch root holding the system's unit files and the built binary
/// at /usr/bin/arqonbus-sidecar (verify checks that ExecStart exists).
#[test]
fn systemd_analyze_verify_accepts_the_unit() {
    let Ok(version) = Command::new("systemd-analyze").arg("--version").output() else {
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
    std::fs::create_dir_all(root.path().join("lib/systemd")).unwrap();
    let status = Command::new("cp")
        .arg("-a")
        .arg(units)
        .arg(root.path().join("lib/systemd/system"))
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::create_dir_all(root.path().join("usr/bin")).unwrap();
    std::fs::copy(
        env!("CARGO_BIN_EXE_arqonbus-sidecar"),
        root.path().join("usr/bin/arqonbus-sidecar"),
    )
    .unwrap();
    let system = root.path().join("etc/systemd/system");
    std::fs::create_dir_all(&system).unwrap();
    std::fs::write(system.join("arqonbus-sidecar.service"), UNIT).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg("--man=no")
        .arg(format!("--root={}", root.path().display()))
        .arg("arqonbus-sidecar.service")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{stderr}");
    // verify only warns on unknown keys and bad values: any output is a failure.
    assert!(
        stderr.trim().is_empty() && stdout.trim().is_empty(),
        "{stdout}{stderr}"
    );
}
