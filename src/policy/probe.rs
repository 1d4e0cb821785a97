//! One policy run outside the bus, exactly as a shard's shield runs it: the same engine
//! configuration, limits, input encoding and instance lifetime (one instance kept from pulse to
//! pulse, started afresh after a fault). `arqonbus policy test` is built on it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arqonbus_proto::v1::ArqonMessage;
use prost::Message;

use super::{Decision, PolicyError, PolicyHost, PolicySpec, ShardPolicies};
use crate::config::PolicyConfig;
use crate::metrics::ShardCounters;

/// What one pulse got from the policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// `None`: the policy's bindings do not cover the pulse's reality and topic, so the shield
    /// would not have asked it.
    pub decision: Option<Decision>,
    /// Fuel the call used (all of `fuel_per_call` when it ran out).
    pub fuel_used: u64,
    /// Wall time of the call, including the instance's start on the first call (and the first
    /// after a fault), as on a shard.
    pub elapsed: Duration,
}

/// One policy, compiled and loaded into an engine of its own.
pub struct Probe {
    spec: PolicySpec,
    policies: ShardPolicies,
    counters: ShardCounters,
}

impl Probe {
    /// Compiles `wasm` (binary or text) with `spec`'s limits, already resolved against `config`.
    pub fn new(config: &PolicyConfig, spec: PolicySpec, wasm: &[u8]) -> Result<Self, PolicyError> {
        super::check_size(&spec.name, wasm.len(), config)?;
        let host = Arc::new(PolicyHost::new(config)?);
        let compiled = host.compile(spec.clone(), wasm)?;
        host.registry.install(Arc::new(compiled))?;
        Ok(Self {
            spec,
            policies: ShardPolicies::new(host),
            counters: ShardCounters::default(),
        })
    }

    pub fn spec(&self) -> &PolicySpec {
        &self.spec
    }

    /// Asks the policy about `message`, as the shield asks about a client's publish of it.
    pub fn run(&mut self, message: &ArqonMessage) -> Outcome {
        if !self.spec.applies_to(&message.reality_id, &message.topic) {
            return Outcome {
                decision: None,
                fuel_used: 0,
                elapsed: Duration::ZERO,
            };
        }
        // The frame a client would send: the envelope in a Publish frame behind its length
        // prefix (a few bytes either way do not change what a policy sees but this field).
        let frame_bytes = message.encoded_len() + 16;
        let start = Instant::now();
        let decision = self.policies.check(message, frame_bytes, &self.counters);
        let elapsed = start.elapsed();
        Outcome {
            decision: Some(decision),
            fuel_used: self.policies.last_fuel_used(),
            elapsed,
        }
    }
}
