//! CASIL: Wasm safety policies at the shield, fail-closed.
//!
//! Every pulse a client publishes passes its connection's shard's policies before it is
//! sequenced. A policy is a Wasm module (guest ABI: `docs/policy-abi.md`) bound to realities and
//! topics ([`Binding`]); every policy whose binding matches a pulse inspects it, in ascending
//! `order` and then by name, and the first that does not allow it stops it.
//!
//! - [`PolicyHost`] is process-wide: the one wasmtime `Engine`, the epoch ticker thread that
//!   enforces deadlines, and the [`Registry`] of compiled modules with its version number.
//! - [`ShardPolicies`] is per shard: one `Store` and `Instance` per policy, made lazily, never
//!   shared with another core. It notices a new registry version with one atomic load per
//!   publish and rebuilds its list, keeping the instances of policies that did not change.
//!
//! Fail-closed: a trap, exhausted fuel, a missed deadline, an instance that cannot be made, a
//! missing export or any answer other than allow or deny blocks the pulse as a
//! [`Decision::Fault`] (POLICY_FAULT on the wire). Only an explicit allow lets it through.

mod binding;
pub mod cases;
mod host;
mod input;
pub mod probe;
mod registry;
mod shard;

pub use binding::{bindings_json, glob_covers, Binding, RealityGlob};
pub use host::PolicyHost;
pub use input::{encode_input_prefix, encode_input_suffix};
pub(crate) use input::{put_bytes, put_u64};
pub use registry::{Catalog, Catalogued, CompiledPolicy, EpochDemand, Registry, RegistryFull};
pub use shard::ShardPolicies;
pub(crate) use shard::{describe_failure, instance_limits};

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use arqonbus_proto::policy::v1::PolicyLoad;

use crate::config::{Config, PolicyConfig, PolicyFile};

/// Why a policy could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("policy `{name}`: cannot read its module {path}: {source}")]
    Read {
        name: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("policy `{name}`: the module is {bytes} bytes; policy.max_wasm_bytes is {max}")]
    TooLarge {
        name: String,
        bytes: usize,
        max: u64,
    },
    #[error("policy `{name}`: the module does not compile: {reason}")]
    Compile { name: String, reason: String },
    #[error("policy `{name}`: {reason}")]
    Invalid { name: String, reason: String },
    #[error(
        "cannot load policy `{name}`: policy.max_policies ({max}) are loaded; unload one first"
    )]
    Full { name: String, max: u64 },
    #[error("cannot start the policy engine: {0}")]
    Engine(String),
}

impl From<RegistryFull> for PolicyError {
    fn from(e: RegistryFull) -> Self {
        PolicyError::Full {
            name: e.name,
            max: e.max,
        }
    }
}

/// Checks a policy name: 1 to 64 bytes of `[a-z0-9_-]`.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "policy name `{name}` must be 1 to 64 bytes of [a-z0-9_-]"
        ))
    }
}

/// The hard limits of one policy, resolved against the `[policy]` defaults and ceilings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub fuel_per_call: u64,
    pub max_memory_pages: u64,
    pub deadline_ms: u64,
}

impl Limits {
    /// Zero means the default; above the ceiling is an error naming the ceiling's key.
    pub fn resolve(
        config: &PolicyConfig,
        fuel_per_call: u64,
        max_memory_pages: u64,
        deadline_ms: u64,
    ) -> Result<Self, String> {
        fn pick(value: u64, default: u64, max: u64, what: &str) -> Result<u64, String> {
            let v = if value == 0 { default } else { value };
            if v > max {
                return Err(format!("{what} {v} is above policy.max_{what} ({max})"));
            }
            Ok(v)
        }
        Ok(Self {
            fuel_per_call: pick(
                fuel_per_call,
                config.default_fuel_per_call,
                config.max_fuel_per_call,
                "fuel_per_call",
            )?,
            max_memory_pages: pick(
                max_memory_pages,
                config.default_max_memory_pages,
                config.max_memory_pages,
                "memory_pages",
            )?,
            deadline_ms: pick(
                deadline_ms,
                config.default_deadline_ms,
                config.max_deadline_ms,
                "deadline_ms",
            )?,
        })
    }
}

/// Everything about a policy except its code.
#[derive(Debug, Clone)]
pub struct PolicySpec {
    pub name: Arc<str>,
    pub bindings: Vec<Binding>,
    pub limits: Limits,
    pub params: BTreeMap<String, String>,
    pub order: i32,
}

impl PolicySpec {
    /// A `[[policies]]` entry of the config file, and its module's bytes.
    pub fn from_file(config: &Config, file: &PolicyFile) -> Result<(Self, Vec<u8>), PolicyError> {
        let invalid = |reason: String| PolicyError::Invalid {
            name: file.name.clone(),
            reason,
        };
        check_name(&file.name).map_err(invalid)?;
        let bindings = file
            .bindings
            .iter()
            .map(|b| Binding::parse(&b.reality_glob, &b.topic_pattern))
            .collect::<Result<Vec<_>, _>>()
            .map_err(invalid)?;
        let limits = Limits::resolve(
            &config.policy,
            file.fuel_per_call,
            file.max_memory_pages,
            file.deadline_ms,
        )
        .map_err(invalid)?;
        let path = config.resolve_path(&file.wasm_path);
        let wasm = std::fs::read(&path).map_err(|source| PolicyError::Read {
            name: file.name.clone(),
            path: path.clone(),
            source,
        })?;
        check_size(&file.name, wasm.len(), &config.policy)?;
        let spec = Self {
            name: file.name.as_str().into(),
            bindings,
            limits,
            params: file.params.clone(),
            order: file.order,
        };
        Ok((spec, wasm))
    }

    /// The payload of a `sys.control.policy.load` pulse.
    pub fn from_load(
        config: &PolicyConfig,
        load: &PolicyLoad,
    ) -> Result<(Self, bytes::Bytes), PolicyError> {
        let invalid = |reason: String| PolicyError::Invalid {
            name: load.name.clone(),
            reason,
        };
        check_name(&load.name).map_err(invalid)?;
        if load.bindings.is_empty() {
            return Err(invalid("PolicyLoad.bindings is empty".into()));
        }
        let bindings = load
            .bindings
            .iter()
            .map(|b| Binding::parse(&b.reality_glob, &b.topic_pattern))
            .collect::<Result<Vec<_>, _>>()
            .map_err(invalid)?;
        let l = load.limits.unwrap_or_default();
        let limits = Limits::resolve(
            config,
            l.fuel_per_call,
            u64::from(l.max_memory_pages),
            u64::from(l.deadline_ms),
        )
        .map_err(invalid)?;
        check_size(&load.name, load.wasm.len(), config)?;
        let spec = Self {
            name: load.name.as_str().into(),
            bindings,
            limits,
            params: load
                .params
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            order: load.order,
        };
        Ok((spec, load.wasm.clone()))
    }

    pub fn applies_to(&self, reality: &str, topic: &str) -> bool {
        self.bindings.iter().any(|b| b.matches(reality, topic))
    }

    /// A JSON description for the audit log.
    pub fn describe(&self) -> serde_json::Value {
        serde_json::json!({
            "bindings": bindings_json(&self.bindings),
            "limits": {
                "fuel_per_call": self.limits.fuel_per_call,
                "max_memory_pages": self.limits.max_memory_pages,
                "deadline_ms": self.limits.deadline_ms,
            },
            "params": self.params,
            "order": self.order,
        })
    }
}

fn check_size(name: &str, bytes: usize, config: &PolicyConfig) -> Result<(), PolicyError> {
    if bytes as u64 > config.max_wasm_bytes {
        return Err(PolicyError::TooLarge {
            name: name.to_owned(),
            bytes,
            max: config.max_wasm_bytes,
        });
    }
    Ok(())
}

/// What the shield decided about one pulse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// A policy answered deny: POLICY_DENIED.
    Denied {
        policy: Arc<str>,
        code: u32,
        reason: String,
    },
    /// A policy could not give an answer: POLICY_FAULT. The pulse is blocked all the same.
    Fault {
        policy: Arc<str>,
        reason: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_take_defaults_and_refuse_above_ceiling() {
        let c = PolicyConfig::default();
        let l = Limits::resolve(&c, 0, 0, 0).unwrap();
        assert_eq!(l.fuel_per_call, c.default_fuel_per_call);
        assert_eq!(l.max_memory_pages, c.default_max_memory_pages);
        assert_eq!(l.deadline_ms, c.default_deadline_ms);
        let err = Limits::resolve(&c, 0, 0, c.max_deadline_ms + 1).unwrap_err();
        assert!(err.contains("policy.max_deadline_ms"), "{err}");
        let err = Limits::resolve(&c, 0, c.max_memory_pages + 1, 0).unwrap_err();
        assert!(err.contains("policy.max_memory_pages"), "{err}");
    }

    #[test]
    fn names() {
        assert!(check_name("energy_cap").is_ok());
        for bad in ["", "Energy", "a.b", &"x".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }
}

#[cfg(test)]
mod abi_tests;
