//! The configuration file: TOML text to a validated `Config`, and what the subsystems build from
//! a validated one at start.

use crate::config::Config;

/// The input is the text of a configuration file.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = Config::from_toml(text) else {
        return;
    };
    if config.validate().is_err() {
        return;
    }
    // What a server builds from a configuration that passed validation must not fail on it
    // in ways validation should have caught.
    let _ = crate::delta::OwnerStates::new(&config);
    let _ = crate::filter::FilterLimits::from_config(&config.limits);
    // Keys are decoded here, not in validation; a bad one is a start error, not a panic.
    let _ = crate::auth::Auth::from_config(&config);
    if let Some(rule) = config.retention_for("lab") {
        let _ = config.segment_bytes_for(rule);
    }
    assert!(config.shard_count() >= 1);
}
