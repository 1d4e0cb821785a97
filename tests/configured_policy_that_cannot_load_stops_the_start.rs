//! A policy listed in the config file that cannot be read or compiled stops the start, with an
//! error that names it, and nothing is audited as loaded; a policy limit above its ceiling is a
//! config error naming the key.

mod common;

use arqonbus::config::{BindingConfig, Config, PolicyFile};
use arqonbus::Server;

fn config_with(dir: &std::path::Path, wasm_path: std::path::PathBuf, deadline_ms: u64) -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        shards: 1,
        admin_listen: None,
        data_dir: dir.to_owned(),
        policies: vec![PolicyFile {
            name: "guard".into(),
            wasm_path,
            bindings: vec![BindingConfig {
                reality_glob: "*".into(),
                topic_pattern: ">".into(),
            }],
            order: 0,
            params: Default::default(),
            fuel_per_call: 0,
            max_memory_pages: 0,
            deadline_ms,
        }],
        ..Config::default()
    }
}

#[test]
fn configured_policy_that_cannot_load_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();

    let missing = dir.path().join("nowhere.wasm");
    let err = Server::start(config_with(dir.path(), missing, 0))
        .err()
        .expect("a missing module stops the start")
        .to_string();
    assert!(
        err.contains("guard") && err.contains("nowhere.wasm"),
        "{err}"
    );

    let broken = dir.path().join("broken.wat");
    std::fs::write(&broken, "(module (func").unwrap();
    let err = Server::start(config_with(dir.path(), broken, 0))
        .err()
        .expect("a module that does not compile stops the start")
        .to_string();
    assert!(
        err.contains("guard") && err.contains("does not compile"),
        "{err}"
    );
    assert!(
        !dir.path().join("audit.log").exists(),
        "nothing was loaded, so nothing is audited as loaded"
    );

    let fine = common::policy::fixture("allow_all");
    let err = Server::start(config_with(dir.path(), fine.clone(), 5_000))
        .err()
        .expect("a deadline above the ceiling is refused")
        .to_string();
    assert!(err.contains("policy.max_deadline_ms"), "{err}");

    // The same policy within its limits starts, and its load is the first audit record.
    let server = Server::start(config_with(dir.path(), fine, 0)).expect("starts");
    assert_eq!(server.policy_host().registry.len(), 1);
    server.stop().unwrap();
    let records = common::policy::audit_records(dir.path());
    assert_eq!(records.len(), 1);
    assert_eq!(
        (records[0].actor.as_str(), records[0].action.as_str()),
        ("config", "policy.load")
    );
}
