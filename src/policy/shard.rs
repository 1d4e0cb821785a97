//! The per-shard side of CASIL: one `Store` and `Instance` per policy, made on first use and
//! never shared with another core, and the evaluation of a pulse against them.

use std::sync::Arc;

use arqonbus_proto::v1::ArqonMessage;
use wasmtime::{Instance, Memory, Store, StoreLimits, StoreLimitsBuilder, Trap, TypedFunc};

use super::{encode_input_prefix, CompiledPolicy, Decision, Limits, PolicyHost};
use crate::metrics::ShardCounters;

/// Decision codes in the high 32 bits of `arqon_inspect`'s answer (docs/policy-abi.md).
const DECISION_ALLOW: u32 = 1;
const DECISION_DENY: u32 = 2;
/// Most bytes of reason text read from a guest.
const MAX_REASON_BYTES: usize = 256;
const WASM_PAGE_BYTES: u64 = 65536;
/// Bounds on what a policy instance may hold besides its memory.
const MAX_TABLES: usize = 4;
const MAX_TABLE_ELEMENTS: usize = 10_000;

/// The policies as this shard sees them.
pub struct ShardPolicies {
    host: Arc<PolicyHost>,
    seen_version: u64,
    entries: Vec<Entry>,
    /// The encoded input prefix, reused from pulse to pulse.
    input: Vec<u8>,
    /// Fuel the policies asked about the last pulse used, together.
    fuel_used: u64,
}

struct Entry {
    policy: Arc<CompiledPolicy>,
    state: State,
}

enum State {
    /// Not instantiated yet on this shard (or discarded after a fault).
    Fresh,
    Ready(Box<Loaded>),
    /// Instantiation failed; the policy blocks what it binds until it is replaced.
    Broken(String),
}

/// An instance and the exports the ABI needs.
struct Loaded {
    store: Store<StoreLimits>,
    memory: Memory,
    alloc: TypedFunc<u32, u32>,
    inspect: TypedFunc<(u32, u32), i64>,
    reason: Option<TypedFunc<(), i64>>,
}

impl ShardPolicies {
    pub fn new(host: Arc<PolicyHost>) -> Self {
        Self {
            host,
            seen_version: 0,
            entries: Vec::new(),
            input: Vec::new(),
            fuel_used: 0,
        }
    }

    pub fn host(&self) -> &Arc<PolicyHost> {
        &self.host
    }

    /// Runs every policy bound to the pulse, in order, and stops at the first that does not
    /// allow it. With no policies loaded this is one atomic load.
    pub fn check(
        &mut self,
        message: &ArqonMessage,
        frame_bytes: usize,
        counters: &ShardCounters,
    ) -> Decision {
        self.refresh();
        self.fuel_used = 0;
        let mut encoded = false;
        for entry in &mut self.entries {
            if !entry
                .policy
                .spec
                .applies_to(&message.reality_id, &message.topic)
            {
                continue;
            }
            if !encoded {
                encode_input_prefix(message, frame_bytes, &mut self.input);
                encoded = true;
            }
            counters.policy_evaluations.inc();
            let (decision, fuel) = entry.inspect(&self.host, &self.input, counters);
            self.fuel_used += fuel;
            if decision != Decision::Allow {
                return decision;
            }
        }
        Decision::Allow
    }

    /// Fuel the policies that inspected the last pulse [`check`](Self::check) saw used (all of
    /// a policy's `fuel_per_call` when it ran out; nothing for one that could not start).
    pub fn last_fuel_used(&self) -> u64 {
        self.fuel_used
    }

    /// Picks up a new catalog, keeping the instances of policies that did not change.
    fn refresh(&mut self) {
        if self.host.registry.version() == self.seen_version {
            return;
        }
        let (version, catalog) = self.host.registry.snapshot();
        let mut old = std::mem::take(&mut self.entries);
        self.entries = catalog
            .iter()
            .map(|policy| {
                let state = old
                    .iter_mut()
                    .find(|e| Arc::ptr_eq(&e.policy, policy))
                    .map(|e| std::mem::replace(&mut e.state, State::Fresh))
                    .unwrap_or(State::Fresh);
                Entry {
                    policy: policy.clone(),
                    state,
                }
            })
            .collect();
        self.seen_version = version;
    }
}

impl Entry {
    /// The decision, and the fuel the call used.
    fn inspect(
        &mut self,
        host: &PolicyHost,
        prefix: &[u8],
        counters: &ShardCounters,
    ) -> (Decision, u64) {
        let name = &self.policy.spec.name;
        if let State::Broken(reason) = &self.state {
            return (fault(name, reason.clone()), 0);
        }
        if matches!(self.state, State::Fresh) {
            counters.policy_instantiations.inc();
            match Loaded::new(host, &self.policy) {
                Ok(loaded) => self.state = State::Ready(Box::new(loaded)),
                Err(reason) => {
                    tracing::warn!(policy = %name, %reason, "policy cannot be instantiated");
                    self.state = State::Broken(reason.clone());
                    return (fault(name, reason), 0);
                }
            }
        }
        let State::Ready(loaded) = &mut self.state else {
            unreachable!("instantiated above");
        };
        let result = loaded.call(host, &self.policy, prefix);
        let fuel_left = loaded.store.get_fuel().unwrap_or(0);
        let fuel = self
            .policy
            .spec
            .limits
            .fuel_per_call
            .saturating_sub(fuel_left);
        match result {
            Ok(decision) => (decision, fuel),
            Err(reason) => {
                // After a trap the guest's own state may be half-updated: start it afresh.
                self.state = State::Fresh;
                (fault(name, reason), fuel)
            }
        }
    }
}

fn fault(policy: &Arc<str>, reason: String) -> Decision {
    Decision::Fault {
        policy: policy.clone(),
        reason,
    }
}

impl Loaded {
    fn new(host: &PolicyHost, policy: &CompiledPolicy) -> Result<Self, String> {
        let limits = policy.spec.limits;
        let mut store = Store::new(host.engine(), instance_limits(limits.max_memory_pages));
        store.limiter(|l| l);
        // A start function runs under the same budget as a call.
        arm(&mut store, host, &limits)?;
        let instance = Instance::new(&mut store, &policy.module, &[])
            .map_err(|e| format!("cannot instantiate: {}", describe(&e, &limits)))?;
        let memory = instance
            .get_memory(&mut store, "memory")
            .ok_or("the module does not export `memory`")?;
        let alloc = instance
            .get_typed_func::<u32, u32>(&mut store, "arqon_alloc")
            .map_err(|e| format!("export `arqon_alloc: (i32) -> i32` is missing: {e}"))?;
        let inspect = instance
            .get_typed_func::<(u32, u32), i64>(&mut store, "arqon_inspect")
            .map_err(|e| format!("export `arqon_inspect: (i32, i32) -> i64` is missing: {e}"))?;
        let reason = instance
            .get_typed_func::<(), i64>(&mut store, "arqon_reason")
            .ok();
        Ok(Self {
            store,
            memory,
            alloc,
            inspect,
            reason,
        })
    }

    /// One inspection: `arqon_alloc`, copy the input in, `arqon_inspect`, and after a deny
    /// `arqon_reason`, all under one fuel budget and one deadline.
    fn call(
        &mut self,
        host: &PolicyHost,
        policy: &CompiledPolicy,
        prefix: &[u8],
    ) -> Result<Decision, String> {
        let limits = policy.spec.limits;
        let suffix = &policy.input_suffix;
        let len = prefix.len() + suffix.len();
        let len32 = u32::try_from(len).map_err(|_| format!("input of {len} bytes is too large"))?;
        arm(&mut self.store, host, &limits)?;
        let ptr = self
            .alloc
            .call(&mut self.store, len32)
            .map_err(|e| describe(&e, &limits))?;
        let data = self.memory.data_mut(&mut self.store);
        let start = ptr as usize;
        let end = start
            .checked_add(len)
            .filter(|&end| ptr != 0 && end <= data.len())
            .ok_or_else(|| {
                format!(
                    "arqon_alloc({len}) returned {ptr:#x}, not room in memory (max_memory_pages {})",
                    limits.max_memory_pages
                )
            })?;
        data[start..start + prefix.len()].copy_from_slice(prefix);
        data[start + prefix.len()..end].copy_from_slice(suffix);
        let answer = self
            .inspect
            .call(&mut self.store, (ptr, len32))
            .map_err(|e| describe(&e, &limits))?;
        let (decision, code) = ((answer as u64 >> 32) as u32, answer as u32);
        match decision {
            DECISION_ALLOW if code == 0 => Ok(Decision::Allow),
            DECISION_DENY => Ok(Decision::Denied {
                policy: policy.spec.name.clone(),
                code,
                reason: self.reason_text(&limits)?,
            }),
            _ => Err(format!(
                "answered {answer:#018x}, which is neither allow nor deny"
            )),
        }
    }

    /// The guest's reason for its last deny; empty when it gives none.
    fn reason_text(&mut self, limits: &Limits) -> Result<String, String> {
        let Some(reason) = &self.reason else {
            return Ok(String::new());
        };
        let packed = reason
            .call(&mut self.store, ())
            .map_err(|e| format!("arqon_reason failed after a deny: {}", describe(&e, limits)))?;
        let ptr = (packed as u64 >> 32) as usize;
        let len = (packed as u32 as usize).min(MAX_REASON_BYTES);
        let data = self.memory.data(&self.store);
        Ok(data
            .get(ptr..ptr.saturating_add(len))
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_default())
    }
}

/// What one Wasm instance (policy or operator) may hold: one memory of at most
/// `max_memory_pages`, a few bounded tables; growing past them traps.
pub(crate) fn instance_limits(max_memory_pages: u64) -> StoreLimits {
    StoreLimitsBuilder::new()
        .memory_size((max_memory_pages * WASM_PAGE_BYTES) as usize)
        .memories(1)
        .instances(1)
        .tables(MAX_TABLES)
        .table_elements(MAX_TABLE_ELEMENTS)
        .trap_on_grow_failure(true)
        .build()
}

/// Gives the store a full budget for one call.
fn arm(store: &mut Store<StoreLimits>, host: &PolicyHost, limits: &Limits) -> Result<(), String> {
    store
        .set_fuel(limits.fuel_per_call)
        .map_err(|e| format!("cannot set fuel: {e}"))?;
    store.set_epoch_deadline(host.deadline_ticks(limits.deadline_ms));
    Ok(())
}

/// Says why a call failed, naming the limit that stopped it.
fn describe(e: &wasmtime::Error, limits: &Limits) -> String {
    describe_failure(
        e,
        limits.fuel_per_call,
        limits.deadline_ms,
        limits.max_memory_pages,
    )
}

/// Says why a Wasm call (policy or operator) failed, naming the limit that stopped it.
pub(crate) fn describe_failure(
    e: &wasmtime::Error,
    fuel_per_call: u64,
    deadline_ms: u64,
    max_memory_pages: u64,
) -> String {
    match e.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => format!("fuel exhausted (fuel_per_call {fuel_per_call})"),
        Some(Trap::Interrupt) => format!("deadline of {deadline_ms} ms missed"),
        Some(trap) => format!("trapped: {trap}"),
        None => {
            // The outer layers are the wasm backtrace; the root says what happened.
            let text = e.root_cause().to_string();
            if text.contains("memory") && text.contains("grow") {
                format!("memory limit reached (max_memory_pages {max_memory_pages}): {text}")
            } else {
                text
            }
        }
    }
}
