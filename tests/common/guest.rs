//! Builds the example policies of `policy/guest` for wasm32-unknown-unknown. Shared by the
//! integration tests and the criterion bench (which includes this file by path).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Builds `policy/guest`'s examples for wasm32-unknown-unknown (once per test binary; cargo makes
/// later builds no-ops) and returns the path of `<name>.wasm`.
pub fn guest_wasm(name: &str) -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let target = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("target")
            .join("policy-guest");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args([
                "build",
                "--release",
                "--target",
                "wasm32-unknown-unknown",
                "--examples",
            ])
            .arg("--manifest-path")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("policy/guest/Cargo.toml"))
            .arg("--target-dir")
            .arg(&target)
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .status()
            .expect("cargo runs");
        assert!(
            status.success(),
            "building policy/guest for wasm32 failed; is the target installed? \
             (rustup target add wasm32-unknown-unknown)"
        );
        target.join("wasm32-unknown-unknown/release/examples")
    });
    dir.join(format!("{name}.wasm"))
}
