//! Entry points for the fuzz targets (`fuzz/`) and for the test that replays their corpora
//! (`tests/fuzz_targets_replay.rs`): one function per decoder that meets outside bytes.
//!
//! Not an API. Each function takes arbitrary bytes, runs them through the same code the server
//! runs on a socket's, a file's or an operator's bytes, and panics only when an invariant
//! breaks (a decoder that panics, a round trip that changes a value, a recovered log that would
//! reuse a sequence). Refusing the input is always a correct answer. The functions live here,
//! not in `fuzz/`, so that the stable replay test in CI and the libFuzzer campaign run exactly
//! the same checks.

mod config;
mod delta;
mod frame;
mod hello;
mod policy_input;
mod recovery;
mod token;

pub use config::config;
pub use delta::delta;
pub use frame::frame;
pub use hello::hello;
pub use policy_input::policy_input;
pub use recovery::{real_log_files, recovery};
pub use token::{token, FUZZ_KEY_SEED, FUZZ_NOW_UNIX_SECS};

/// A target: arbitrary bytes in, a panic only when an invariant breaks.
pub type Target = fn(&[u8]);

/// Every target by name, as the fuzz crate and the replay test call them.
pub const TARGETS: &[(&str, Target)] = &[
    ("frame", frame),
    ("hello", hello),
    ("token", token),
    ("config", config),
    ("policy_input", policy_input),
    ("delta", delta),
    ("recovery", recovery),
];
