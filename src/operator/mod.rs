//! Hosted Wasm operators: modules that run inside the bus, on a reality's owner shard, right
//! after a pulse is sequenced, and emit pulses into the same reality (guest ABI:
//! `docs/operator-abi.md`).
//!
//! - [`OperatorHost`] is process-wide: CASIL's wasmtime engine and epoch ticker (shared, not
//!   copied), and the [`Registry`] of compiled operators.
//! - [`ShardOperators`] is per shard: one `Store` and `Instance` per (operator, reality), whose
//!   linear memory is the operator's state for that reality, its parameters, and the cascade that
//!   feeds a sequenced pulse to every operator bound to it. The shard meets it at one named
//!   point: [`ShardOperators::on_sequenced`], with a [`Sequencing`] sink that stamps each output.
//! - [`replay`](crate::replay) runs the same code offline over a recorded log.
//!
//! Determinism by construction: a guest may import only the host's own functions (`emit`,
//! `param_f64`, `param_text`); floats are NaN-canonicalised; fuel (counted, deterministic) is
//! what limits how much an operator computes; outputs take their timestamp from the input and
//! their id from (reality, sequence). The wall-clock deadline only guards against a stalled
//! shard and is the one limit a replay may not reproduce.
//!
//! Fail-closed per input: a trap, exhausted fuel, a missed deadline, memory growth past the cap,
//! an emit past a cap or a malformed emit drops every output of that input (never half), counts
//! it, and publishes an [`OperatorFault`] on `sys.operator.fault` in the reality. After
//! `operator.max_consecutive_faults` in a row the operator is parked for that reality until it is
//! reloaded. Other realities and the shard go on.

mod input;
mod output;
mod shard;

pub use output::{output_id, stamp_output};
pub use shard::{Discard, Sequencing, ShardOperators};

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use arqonbus_proto::operator::v1::{param_value, OperatorLoad, ParamValue};
use sha2::{Digest, Sha256};
use wasmtime::Module;

use arqonbus_proto::v1::{OperatorManifest, SchemaRef};

use crate::config::{
    BindingConfig, Config, OperatorConfig, OperatorFile, ParamConfig, SchemaConfig,
};
use crate::policy::{
    bindings_json, check_name, Binding, Catalogued, PolicyHost, Registry, RegistryFull,
};
use crate::sam::Manifest;

pub use arqonbus_proto::operator::v1::OperatorFault;

/// Topic of the fault notices the bus publishes when an operator fails on an input.
pub const FAULT_TOPIC: &str = "sys.operator.fault";
/// Topic on which parameter changes are sequenced into a reality (from
/// `sys.control.operator.param`, after the audit record).
pub const PARAM_TOPIC: &str = "sys.operator.param";
/// Every topic under this prefix is written only by the bus.
pub const RESERVED_PREFIX: &str = "sys.operator.";

/// Why an operator could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    #[error("operator `{name}`: cannot read its module {path}: {source}")]
    Read {
        name: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("operator `{name}`: the module does not compile: {reason}")]
    Compile { name: String, reason: String },
    #[error("operator `{name}`: {reason}")]
    Invalid { name: String, reason: String },
    #[error(transparent)]
    Full(#[from] RegistryFull),
}

/// A parameter's value.
#[derive(Debug, Clone, PartialEq)]
pub enum Param {
    Number(f64),
    Text(Arc<str>),
}

impl Param {
    /// From the wire; `None` when the value is unset.
    pub fn from_proto(v: &ParamValue) -> Option<Self> {
        match v.value.as_ref()? {
            param_value::Value::Number(n) => Some(Param::Number(*n)),
            param_value::Value::Text(t) => Some(Param::Text(t.as_str().into())),
        }
    }

    pub fn to_proto(&self) -> ParamValue {
        ParamValue {
            value: Some(match self {
                Param::Number(n) => param_value::Value::Number(*n),
                Param::Text(t) => param_value::Value::Text(t.to_string()),
            }),
        }
    }

    /// `NAME=VALUE` on a command line: a number when it parses as one, else text.
    pub fn parse_cli(value: &str) -> Self {
        match value.parse::<f64>() {
            Ok(n) => Param::Number(n),
            Err(_) => Param::Text(value.into()),
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Param::Number(n) => serde_json::json!(n),
            Param::Text(t) => serde_json::json!(&**t),
        }
    }
}

/// An operator's parameters, by name (ordered: they are audited and listed).
pub type Params = BTreeMap<String, Param>;

/// Checks a parameter name and value against `[operator]`.
pub fn check_param(config: &OperatorConfig, name: &str, value: &Param) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.');
    if !ok {
        return Err(format!(
            "parameter name `{name}` must be 1 to 64 bytes of [A-Za-z0-9_.-]"
        ));
    }
    if let Param::Text(t) = value {
        if t.len() as u64 > config.max_param_text_bytes {
            return Err(format!(
                "parameter `{name}` is {} bytes; operator.max_param_text_bytes is {}",
                t.len(),
                config.max_param_text_bytes
            ));
        }
    }
    Ok(())
}

/// The hard limits of one operator, resolved against the `[operator]` defaults and ceilings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub fuel_per_call: u64,
    pub max_memory_pages: u64,
    pub deadline_ms: u64,
    pub max_emits_per_call: u64,
    pub max_emit_bytes_per_call: u64,
}

/// The limits as asked for (zero = default).
#[derive(Debug, Clone, Copy, Default)]
pub struct AskedLimits {
    pub fuel_per_call: u64,
    pub max_memory_pages: u64,
    pub deadline_ms: u64,
    pub max_emits_per_call: u64,
    pub max_emit_bytes_per_call: u64,
}

impl Limits {
    /// Zero means the default; above the ceiling is an error naming the ceiling's key.
    pub fn resolve(config: &OperatorConfig, asked: AskedLimits) -> Result<Self, String> {
        fn pick(value: u64, default: u64, max: u64, key: &str) -> Result<u64, String> {
            let v = if value == 0 { default } else { value };
            if v > max {
                return Err(format!("{v} is above operator.{key} ({max})"));
            }
            Ok(v)
        }
        Ok(Self {
            fuel_per_call: pick(
                asked.fuel_per_call,
                config.default_fuel_per_call,
                config.max_fuel_per_call,
                "max_fuel_per_call",
            )?,
            max_memory_pages: pick(
                asked.max_memory_pages,
                config.default_max_memory_pages,
                config.max_memory_pages,
                "max_memory_pages",
            )?,
            deadline_ms: pick(
                asked.deadline_ms,
                config.default_deadline_ms,
                config.max_deadline_ms,
                "max_deadline_ms",
            )?,
            max_emits_per_call: pick(
                asked.max_emits_per_call,
                config.default_max_emits_per_call,
                config.max_emits_per_call,
                "max_emits_per_call",
            )?,
            max_emit_bytes_per_call: pick(
                asked.max_emit_bytes_per_call,
                config.default_max_emit_bytes_per_call,
                config.max_emit_bytes_per_call,
                "max_emit_bytes_per_call",
            )?,
        })
    }
}

/// Everything about an operator except its code.
#[derive(Debug, Clone)]
pub struct OperatorSpec {
    pub name: Arc<str>,
    pub bindings: Vec<Binding>,
    pub limits: Limits,
    /// Initial parameters; each reality's copy changes with `sys.control.operator.param`.
    pub params: Params,
    /// The declared types (SAM manifest), if any: inputs of other types on covered topics are
    /// not fed to it; an output of an undeclared type faults the input.
    pub manifest: Option<Arc<Manifest>>,
}

impl OperatorSpec {
    fn build(
        config: &OperatorConfig,
        name: &str,
        bindings: &[(String, String)],
        asked: AskedLimits,
        params: Params,
        manifest: Option<OperatorManifest>,
    ) -> Result<Self, String> {
        check_name(name).map_err(|e| e.replace("policy name", "operator name"))?;
        if bindings.is_empty() {
            return Err("needs at least one binding (reality glob, topic pattern)".into());
        }
        let bindings = bindings
            .iter()
            .map(|(r, t)| Binding::parse(r, t))
            .collect::<Result<Vec<_>, _>>()?;
        let limits = Limits::resolve(config, asked)?;
        if params.len() as u64 > config.max_params {
            return Err(format!(
                "{} parameters; operator.max_params is {}",
                params.len(),
                config.max_params
            ));
        }
        for (k, v) in &params {
            check_param(config, k, v)?;
        }
        let manifest = manifest
            .map(|mut m| {
                if m.name.is_empty() {
                    m.name = name.to_owned();
                } else if m.name != name {
                    return Err(format!(
                        "manifest.name `{}` must be the operator's name `{name}`",
                        m.name
                    ));
                }
                Manifest::validate(&m).map(Arc::new)
            })
            .transpose()?;
        Ok(Self {
            name: name.into(),
            bindings,
            limits,
            params,
            manifest,
        })
    }

    /// The manifest of an `[[operators]]` entry; `descriptor_set` is the strict-mode file's bytes.
    fn file_manifest(file: &OperatorFile, descriptor_set: Vec<u8>) -> Option<OperatorManifest> {
        let m = file.manifest.as_ref()?;
        let schemas = |list: &[SchemaConfig]| {
            list.iter()
                .map(|s| SchemaRef {
                    topic_pattern: s.topic.clone(),
                    type_url: s.type_url.clone(),
                })
                .collect()
        };
        Some(OperatorManifest {
            name: file.name.clone(),
            version: m.version.clone(),
            capabilities: m.capabilities.clone(),
            input_schemas: schemas(&m.inputs),
            output_schemas: schemas(&m.outputs),
            descriptor_set: descriptor_set.into(),
        })
    }

    fn file_parts(file: &OperatorFile) -> (Vec<(String, String)>, AskedLimits, Params) {
        let bindings = file
            .bindings
            .iter()
            .map(
                |BindingConfig {
                     reality_glob,
                     topic_pattern,
                 }| { (reality_glob.clone(), topic_pattern.clone()) },
            )
            .collect();
        let asked = AskedLimits {
            fuel_per_call: file.fuel_per_call,
            max_memory_pages: file.max_memory_pages,
            deadline_ms: file.deadline_ms,
            max_emits_per_call: file.max_emits_per_call,
            max_emit_bytes_per_call: file.max_emit_bytes_per_call,
        };
        let params = file
            .params
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    ParamConfig::Number(n) => Param::Number(*n),
                    ParamConfig::Text(t) => Param::Text(t.as_str().into()),
                };
                (k.clone(), v)
            })
            .collect();
        (bindings, asked, params)
    }

    /// Checks an `[[operators]]` entry without reading its module (`config --check`).
    pub fn check_file(config: &OperatorConfig, file: &OperatorFile) -> Result<(), String> {
        let (bindings, asked, params) = Self::file_parts(file);
        // The descriptor set is a file to read: `from_file` checks strict mode.
        let manifest = Self::file_manifest(file, Vec::new());
        Self::build(config, &file.name, &bindings, asked, params, manifest).map(|_| ())
    }

    /// An `[[operators]]` entry of the config file, and its module's bytes.
    pub fn from_file(
        config: &Config,
        file: &OperatorFile,
    ) -> Result<(Self, Vec<u8>), OperatorError> {
        let (bindings, asked, params) = Self::file_parts(file);
        let descriptor_set = match file
            .manifest
            .as_ref()
            .and_then(|m| m.descriptor_set.as_ref())
        {
            Some(path) => {
                let path = config.resolve_path(path);
                std::fs::read(&path).map_err(|source| OperatorError::Read {
                    name: file.name.clone(),
                    path,
                    source,
                })?
            }
            None => Vec::new(),
        };
        let manifest = Self::file_manifest(file, descriptor_set);
        let spec = Self::build(
            &config.operator,
            &file.name,
            &bindings,
            asked,
            params,
            manifest,
        )
        .map_err(|reason| OperatorError::Invalid {
            name: file.name.clone(),
            reason,
        })?;
        let path = config.resolve_path(&file.wasm_path);
        let wasm = std::fs::read(&path).map_err(|source| OperatorError::Read {
            name: file.name.clone(),
            path: path.clone(),
            source,
        })?;
        check_size(&file.name, wasm.len(), &config.operator)?;
        Ok((spec, wasm))
    }

    /// The payload of a `sys.control.operator.load` pulse.
    pub fn from_load(
        config: &OperatorConfig,
        load: &OperatorLoad,
    ) -> Result<(Self, bytes::Bytes), OperatorError> {
        let invalid = |reason: String| OperatorError::Invalid {
            name: load.name.clone(),
            reason,
        };
        let bindings: Vec<(String, String)> = load
            .bindings
            .iter()
            .map(|b| (b.reality_glob.clone(), b.topic_pattern.clone()))
            .collect();
        let l = load.limits.unwrap_or_default();
        let asked = AskedLimits {
            fuel_per_call: l.fuel_per_call,
            max_memory_pages: u64::from(l.max_memory_pages),
            deadline_ms: u64::from(l.deadline_ms),
            max_emits_per_call: u64::from(l.max_emits_per_call),
            max_emit_bytes_per_call: l.max_emit_bytes_per_call,
        };
        let mut params = Params::new();
        for (k, v) in &load.params {
            let v = Param::from_proto(v)
                .ok_or_else(|| invalid(format!("parameter `{k}` has no value")))?;
            params.insert(k.clone(), v);
        }
        let spec = Self::build(
            config,
            &load.name,
            &bindings,
            asked,
            params,
            load.manifest.clone(),
        )
        .map_err(invalid)?;
        check_size(&load.name, load.wasm.len(), config)?;
        Ok((spec, load.wasm.clone()))
    }

    /// True when some binding takes pulses of this reality and topic.
    pub fn applies_to(&self, reality: &str, topic: &str) -> bool {
        self.bindings.iter().any(|b| b.matches(reality, topic))
    }

    /// A JSON description for the audit log and `operator list`.
    pub fn describe(&self) -> serde_json::Value {
        serde_json::json!({
            "bindings": bindings_json(&self.bindings),
            "limits": {
                "fuel_per_call": self.limits.fuel_per_call,
                "max_memory_pages": self.limits.max_memory_pages,
                "deadline_ms": self.limits.deadline_ms,
                "max_emits_per_call": self.limits.max_emits_per_call,
                "max_emit_bytes_per_call": self.limits.max_emit_bytes_per_call,
            },
            "params": self.params.iter().map(|(k, v)| (k.clone(), v.to_json()))
                .collect::<serde_json::Map<_, _>>(),
            "manifest": self.manifest.as_ref().map(|m| m.describe()),
        })
    }
}

fn check_size(name: &str, bytes: usize, config: &OperatorConfig) -> Result<(), OperatorError> {
    if bytes as u64 > config.max_wasm_bytes {
        return Err(OperatorError::Invalid {
            name: name.to_owned(),
            reason: format!(
                "the module is {bytes} bytes; operator.max_wasm_bytes is {}",
                config.max_wasm_bytes
            ),
        });
    }
    Ok(())
}

/// An operator ready to instantiate on any shard. Immutable: a reload installs a new one, and
/// shards tell the two apart by pointer (and start its instances afresh).
pub struct CompiledOperator {
    pub spec: OperatorSpec,
    module: Module,
    /// SHA-256 of the module's bytes, as audited.
    pub sha256: [u8; 32],
    pub wasm_bytes: usize,
}

impl CompiledOperator {
    pub fn sha256_hex(&self) -> String {
        crate::audit::hex(&self.sha256)
    }
}

impl Catalogued for CompiledOperator {
    const KIND: &'static str = "operator";
    fn name(&self) -> &str {
        &self.spec.name
    }
    fn sha256_hex(&self) -> String {
        CompiledOperator::sha256_hex(self)
    }
}

impl std::fmt::Debug for CompiledOperator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledOperator")
            .field("name", &self.spec.name)
            .field("sha256", &self.sha256_hex())
            .finish()
    }
}

/// Shared by every shard (behind an `Arc`): CASIL's engine and ticker, and the operators.
pub struct OperatorHost {
    policy_host: Arc<PolicyHost>,
    pub registry: Arc<Registry<CompiledOperator>>,
    config: OperatorConfig,
}

impl OperatorHost {
    pub fn new(policy_host: Arc<PolicyHost>, config: &OperatorConfig) -> Self {
        let registry = Arc::new(Registry::new(
            config.max_operators,
            policy_host.demand().clone(),
        ));
        Self {
            policy_host,
            registry,
            config: config.clone(),
        }
    }

    pub fn config(&self) -> &OperatorConfig {
        &self.config
    }

    pub fn engine(&self) -> &wasmtime::Engine {
        self.policy_host.engine()
    }

    /// Epoch ticks that give a call at least `deadline_ms`.
    pub fn deadline_ticks(&self, deadline_ms: u64) -> u64 {
        self.policy_host.deadline_ticks(deadline_ms)
    }

    /// Compiles a module (binary or text format). Slow (milliseconds): callers on a shard run
    /// it on the blocking pool.
    pub fn compile(
        &self,
        spec: OperatorSpec,
        wasm: &[u8],
    ) -> Result<CompiledOperator, OperatorError> {
        let module = Module::new(self.engine(), wasm).map_err(|e| OperatorError::Compile {
            name: spec.name.to_string(),
            reason: format!("{e:#}"),
        })?;
        Ok(CompiledOperator {
            spec,
            module,
            sha256: Sha256::digest(wasm).into(),
            wasm_bytes: wasm.len(),
        })
    }

    /// Compiles and installs every `[[operators]]` entry of `config` (no audit: the caller
    /// records them). Used by `replay`, which runs the configuration offline.
    pub fn load_configured(
        &self,
        config: &Config,
    ) -> Result<Vec<Arc<CompiledOperator>>, OperatorError> {
        let mut loaded = Vec::new();
        for file in &config.operators {
            let (spec, wasm) = OperatorSpec::from_file(config, file)?;
            let op = Arc::new(self.compile(spec, &wasm)?);
            self.registry.install(op.clone())?;
            loaded.push(op);
        }
        Ok(loaded)
    }
}

impl std::fmt::Debug for OperatorHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OperatorHost")
            .field("operators", &self.registry.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_take_defaults_and_refuse_above_ceiling() {
        let c = OperatorConfig::default();
        let l = Limits::resolve(&c, AskedLimits::default()).unwrap();
        assert_eq!(l.fuel_per_call, c.default_fuel_per_call);
        assert_eq!(l.max_emits_per_call, c.default_max_emits_per_call);
        let err = Limits::resolve(
            &c,
            AskedLimits {
                max_emits_per_call: c.max_emits_per_call + 1,
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(err.contains("operator.max_emits_per_call"), "{err}");
    }

    #[test]
    fn params_are_bounded() {
        let c = OperatorConfig {
            max_param_text_bytes: 4,
            ..Default::default()
        };
        assert!(check_param(&c, "k_c", &Param::Number(0.5)).is_ok());
        assert!(check_param(&c, "", &Param::Number(0.5)).is_err());
        let err = check_param(&c, "s", &Param::Text("hello".into())).unwrap_err();
        assert!(err.contains("operator.max_param_text_bytes"), "{err}");
    }

    #[test]
    fn cli_params_are_numbers_when_they_parse() {
        assert_eq!(Param::parse_cli("0.7"), Param::Number(0.7));
        assert_eq!(Param::parse_cli("fast"), Param::Text("fast".into()));
    }
}
