//! Helpers for the hosted-operator tests: `[[operators]]` entries, control pulses that load,
//! unload and tune operators, realities placed on a chosen shard, and reading pulses.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use arqonbus::config::{BindingConfig, OperatorFile, ParamConfig};
use arqonbus::proto::operator::v1::{
    param_value, OperatorLimits, OperatorLoad, OperatorParamSet, OperatorUnload, ParamValue,
};
use arqonbus::proto::policy::v1::PolicyBinding;
use arqonbus::proto::v1::ArqonMessage;
use arqonbus_client::{Outgoing, Subscription};
use futures::StreamExt;

/// A hostile or broken operator fixture in text format.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/operator/{name}.wat"))
}

/// An `[[operators]]` entry.
pub fn operator_file(
    name: &str,
    wasm_path: PathBuf,
    reality_glob: &str,
    topic_pattern: &str,
    params: &[(&str, ParamConfig)],
) -> OperatorFile {
    OperatorFile {
        name: name.into(),
        wasm_path,
        bindings: vec![BindingConfig {
            reality_glob: reality_glob.into(),
            topic_pattern: topic_pattern.into(),
        }],
        params: params
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect::<BTreeMap<_, _>>(),
        fuel_per_call: 0,
        max_memory_pages: 0,
        deadline_ms: 0,
        max_emits_per_call: 0,
        max_emit_bytes_per_call: 0,
        manifest: None,
    }
}

pub fn number(v: f64) -> ParamValue {
    ParamValue {
        value: Some(param_value::Value::Number(v)),
    }
}

pub fn text(v: &str) -> ParamValue {
    ParamValue {
        value: Some(param_value::Value::Text(v.into())),
    }
}

/// A `sys.control.operator.load` pulse.
pub fn load_pulse(
    reality: &str,
    name: &str,
    wasm: Vec<u8>,
    binding: (&str, &str),
    limits: OperatorLimits,
    params: &[(&str, f64)],
) -> Outgoing {
    let load = OperatorLoad {
        name: name.into(),
        bindings: vec![PolicyBinding {
            reality_glob: binding.0.into(),
            topic_pattern: binding.1.into(),
        }],
        limits: Some(limits),
        wasm: wasm.into(),
        params: params
            .iter()
            .map(|(k, v)| (k.to_string(), number(*v)))
            .collect(),
        manifest: None,
    };
    Outgoing::new(reality, "sys.control.operator.load").message(&load)
}

pub fn unload_pulse(reality: &str, name: &str) -> Outgoing {
    Outgoing::new(reality, "sys.control.operator.unload")
        .message(&OperatorUnload { name: name.into() })
}

/// A `sys.control.operator.param` pulse setting `operator.name = value` in `reality`.
pub fn param_pulse(reality: &str, operator: &str, name: &str, value: f64) -> Outgoing {
    let set = OperatorParamSet {
        operator: operator.into(),
        name: name.into(),
        value: Some(number(value)),
    };
    Outgoing::new(reality, "sys.control.operator.param").message(&set)
}

/// A reality name starting with `prefix` whose owner is `shard` (of `shards`).
pub fn reality_on_shard(prefix: &str, shard: usize, shards: usize) -> String {
    (0..1000)
        .map(|i| format!("{prefix}-{i}"))
        .find(|r| arqonbus::routing::owner_shard(r, shards) == shard)
        .expect("some name hashes to every shard")
}

/// The next pulse of `sub`, failing the test after `secs` seconds.
pub async fn next(sub: &mut Subscription, secs: u64) -> ArqonMessage {
    tokio::time::timeout(Duration::from_secs(secs), sub.next())
        .await
        .expect("a pulse arrives in time")
        .expect("the subscription is open")
        .expect("no pulses were dropped")
}

/// True when `sub` delivers nothing for `ms` milliseconds.
pub async fn quiet(sub: &mut Subscription, ms: u64) -> bool {
    tokio::time::timeout(Duration::from_millis(ms), sub.next())
        .await
        .is_err()
}
