//! Builds the example guests of `policy/guest` and `operator/guest` for wasm32-unknown-unknown.
//! Shared by the integration tests and the criterion benches (which include this file by path).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Builds the examples of the guest crate at `crate_dir` (relative to the repository) once per
/// test binary (cargo makes later builds no-ops) and returns their folder.
fn build_examples(crate_dir: &str, target_name: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let target = root.join("target").join(target_name);
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
        .arg(root.join(crate_dir).join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .status()
        .expect("cargo runs");
    assert!(
        status.success(),
        "building {crate_dir} for wasm32 failed; is the target installed? \
         (rustup target add wasm32-unknown-unknown)"
    );
    target.join("wasm32-unknown-unknown/release/examples")
}

/// The path of `policy/guest`'s example `<name>.wasm`.
pub fn guest_wasm(name: &str) -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| build_examples("policy/guest", "policy-guest"))
        .join(format!("{name}.wasm"))
}

/// The path of `operator/guest`'s example `<name>.wasm` (kuramoto, nvm_rig, echo).
pub fn operator_wasm(name: &str) -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| build_examples("operator/guest", "operator-guest"))
        .join(format!("{name}.wasm"))
}
