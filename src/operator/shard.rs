//! The per-shard side of hosted operators: one `Store` and `Instance` per (operator, reality),
//! their parameters, and the cascade that runs a sequenced pulse through every operator bound to
//! it. Nothing here is shared with another core; `replay` drives the same type offline.

use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::sync::Arc;

use arqonbus_proto::operator::v1::{Emit, OperatorFault, OperatorParamSet};
use arqonbus_proto::v1::ArqonMessage;
use prost::{Message, Name};
use wasmtime::{Caller, Extern, Instance, Linker, Memory, Store, StoreLimits, TypedFunc};

use super::{
    input, output, CompiledOperator, Limits, OperatorHost, Param, Params, FAULT_TOPIC, PARAM_TOPIC,
};
use crate::metrics::ShardCounters;
use crate::routing::validate_topic;

/// The module the host's functions are imported from.
const IMPORT_MODULE: &str = "arqon";

/// Where the cascade puts what operators emit: the shard (live) or the replay writer. It stamps
/// the output's sequence, stores and delivers it, and hands back the stamped envelope so it can be
/// fed to the next operator; `None` when it could not take it (storage full), which ends this
/// input's cascade.
pub trait Sequencing {
    fn sequence_output(&mut self, output: ArqonMessage) -> Option<ArqonMessage>;

    /// Whether an output of this type may go on this topic of `reality` beyond what the
    /// operator's own manifest allows: the live owner checks its typed circuits' edges (and
    /// counts them); a replay, which runs without circuits, lets it pass.
    fn check_hop(&self, _reality: &str, _topic: &str, _type_url: &str) -> Result<(), String> {
        Ok(())
    }
}

/// A sink that keeps nothing: for rebuilding operators' state from a log whose outputs are
/// already recorded (replay before a fork point, a live fork's import). Outputs are stamped
/// right behind their input so chained operators see a plausible envelope.
pub struct Discard;

impl Sequencing for Discard {
    fn sequence_output(&mut self, mut output: ArqonMessage) -> Option<ArqonMessage> {
        let (near, ts) = (output.input_sequence + 1, output.timestamp_unix_nanos);
        output::stamp_output(&mut output, near, ts);
        Some(output)
    }
}

/// What the guest's host calls see during one call.
struct CallState {
    limits: StoreLimits,
    params: Rc<Params>,
    emitted: Vec<Emit>,
    emitted_bytes: u64,
    caps: Limits,
    /// Why an import refused the call (the trap's reason).
    refused: Option<String>,
}

/// One (operator, reality).
struct Instance1 {
    params: Rc<Params>,
    state: State,
    consecutive_faults: u64,
}

enum State {
    Fresh,
    Ready(Box<Loaded>),
    Parked(String),
}

struct Loaded {
    store: Store<CallState>,
    memory: Memory,
    alloc: TypedFunc<u32, u32>,
    operate: TypedFunc<(u32, u32), i32>,
}

/// An operator as this shard knows it, its instances by reality, and what it did here.
struct Entry {
    operator: Arc<CompiledOperator>,
    realities: HashMap<Arc<str>, Instance1>,
    calls: u64,
    emitted: u64,
    faults: u64,
}

/// The operators of one shard.
pub struct ShardOperators {
    host: Arc<OperatorHost>,
    linker: Linker<CallState>,
    seen_version: u64,
    entries: Vec<Entry>,
    /// Parameters pinned by a replay (`--param`): recorded changes to them are ignored.
    overrides: HashMap<(String, String), Param>,
    /// Parameters pinned for one reality (a live fork): (reality, operator, name).
    reality_pins: HashMap<(String, String, String), Param>,
    instances: u64,
    input: Vec<u8>,
}

impl ShardOperators {
    pub fn new(host: Arc<OperatorHost>) -> Self {
        let linker = host_functions(host.engine());
        Self {
            host,
            linker,
            seen_version: 0,
            entries: Vec::new(),
            overrides: HashMap::new(),
            reality_pins: HashMap::new(),
            instances: 0,
            input: Vec::new(),
        }
    }

    /// Pins a parameter for every reality (replay and forks): it overrides the configured value
    /// and recorded changes.
    pub fn pin_param(&mut self, operator: &str, name: &str, value: Param) {
        self.refresh();
        for entry in &mut self.entries {
            if *entry.operator.spec.name == *operator {
                for instance in entry.realities.values_mut() {
                    Rc::make_mut(&mut instance.params).insert(name.to_owned(), value.clone());
                }
            }
        }
        self.overrides
            .insert((operator.to_owned(), name.to_owned()), value);
    }

    /// Pins a parameter of `operator` in `reality` only (a live fork, from its fork point): it
    /// takes effect now, and recorded changes to it in that reality are ignored from now on.
    pub fn pin_reality_param(&mut self, reality: &str, operator: &str, name: &str, value: Param) {
        self.refresh();
        let max = self.host.config().max_instances_per_shard;
        if let Some(entry) = self
            .entries
            .iter_mut()
            .find(|e| *e.operator.spec.name == *operator)
        {
            let found = instance_of(
                &mut entry.realities,
                &entry.operator,
                reality,
                &self.overrides,
                &mut self.instances,
                max,
            );
            if let Some(instance) = found {
                Rc::make_mut(&mut instance.params).insert(name.to_owned(), value.clone());
            }
        }
        self.reality_pins.insert(
            (reality.to_owned(), operator.to_owned(), name.to_owned()),
            value,
        );
    }

    /// Runs `pulse` through the operators to rebuild their state, keeping none of their outputs
    /// (the log being imported already has them).
    pub fn warm(&mut self, pulse: &ArqonMessage, counters: &ShardCounters) {
        if pulse.emitted_by.is_empty() {
            self.on_sequenced(pulse, counters, &mut Discard);
        }
    }

    /// True when the cascade has anything to do for this pulse: an operator binds it, or it is a
    /// parameter change. With no operators loaded this is one atomic load.
    /// True when a hosted operator has an instance (or a pinned parameter) in `reality`.
    pub fn holds(&self, reality: &str) -> bool {
        self.entries
            .iter()
            .any(|e| e.realities.contains_key(reality))
            || self.reality_pins.keys().any(|(r, _, _)| r == reality)
    }

    pub fn wants(&mut self, reality: &str, topic: &str) -> bool {
        self.refresh();
        if self.entries.is_empty() {
            return false;
        }
        topic == PARAM_TOPIC
            || crate::param::is_param_topic(topic)
            || (!topic.starts_with("sys.")
                && self
                    .entries
                    .iter()
                    .any(|e| e.operator.spec.applies_to(reality, topic)))
    }

    /// The named point on the pulse's path: called by the owner right after `input` was
    /// sequenced (stored, released). Runs every operator bound to it and, breadth first, to
    /// what they emit (up to `operator.max_chain_depth` hops), handing each output to `sink`
    /// to be sequenced right behind. A parameter change is applied here, at its position.
    pub fn on_sequenced(
        &mut self,
        input: &ArqonMessage,
        counters: &ShardCounters,
        sink: &mut dyn Sequencing,
    ) {
        self.refresh();
        if input.topic == PARAM_TOPIC {
            self.apply_param(input);
            return;
        }
        if crate::param::is_param_topic(&input.topic) {
            self.apply_reality_param(input);
            return;
        }
        if input.topic.starts_with("sys.") {
            // Operators never see the bus's own pulses (fault notices, control traffic).
            return;
        }
        let max_depth = self.host.config().max_chain_depth;
        let mut queue: VecDeque<(ArqonMessage, u64)> = VecDeque::new();
        let mut outputs = Vec::new();
        self.feed(input, counters, &*sink, &mut outputs);
        for out in outputs.drain(..) {
            match sink.sequence_output(out) {
                Some(stamped) => queue.push_back((stamped, 1)),
                None => return,
            }
        }
        while let Some((pulse, depth)) = queue.pop_front() {
            if depth >= max_depth || pulse.topic.starts_with("sys.") {
                continue;
            }
            self.feed(&pulse, counters, &*sink, &mut outputs);
            for out in outputs.drain(..) {
                match sink.sequence_output(out) {
                    Some(stamped) => queue.push_back((stamped, depth + 1)),
                    None => return,
                }
            }
        }
    }

    /// Runs every operator bound to `pulse` (except the one that emitted it) and appends their
    /// outputs, operator by operator, in catalog order. A fault contributes its notice instead.
    fn feed(
        &mut self,
        pulse: &ArqonMessage,
        counters: &ShardCounters,
        hops: &dyn Sequencing,
        out: &mut Vec<ArqonMessage>,
    ) {
        let max_faults = self.host.config().max_consecutive_faults;
        let max_instances = self.host.config().max_instances_per_shard;
        let Self {
            host,
            linker,
            entries,
            overrides,
            instances,
            input: buf,
            ..
        } = self;
        for entry in entries.iter_mut() {
            let operator = entry.operator.clone();
            let spec = &operator.spec;
            if *spec.name == *pulse.emitted_by || !spec.applies_to(&pulse.reality_id, &pulse.topic)
            {
                continue;
            }
            if let Some(m) = &spec.manifest {
                let type_url = pulse.payload.as_ref().map_or("", |p| p.type_url.as_str());
                if !m.takes_input(&pulse.topic, type_url) {
                    // Not a type it declares for this topic: never fed to it.
                    counters.pulses_filtered.inc();
                    continue;
                }
            }
            let Some(instance) = instance_of(
                &mut entry.realities,
                &operator,
                &pulse.reality_id,
                overrides,
                instances,
                max_instances,
            ) else {
                counters.operator_faults.inc();
                tracing::warn!(
                    operator = %spec.name,
                    reality = %pulse.reality_id,
                    "operator.max_instances_per_shard reached; input not processed"
                );
                continue;
            };
            if matches!(instance.state, State::Parked(_)) {
                continue;
            }
            counters.operator_calls.inc();
            entry.calls += 1;
            input::encode(pulse, &spec.name, buf);
            let called = call(host, linker, &operator, instance, buf, counters)
                .and_then(|emits| check_types(spec, pulse, &emits, hops, counters).map(|()| emits));
            match called {
                Ok(emits) => {
                    instance.consecutive_faults = 0;
                    counters.operator_emitted.add(emits.len() as u64);
                    entry.emitted += emits.len() as u64;
                    out.extend(
                        emits
                            .into_iter()
                            .map(|e| output::envelope(pulse, &spec.name, e)),
                    );
                }
                Err(reason) => {
                    counters.operator_faults.inc();
                    entry.faults += 1;
                    instance.consecutive_faults += 1;
                    let parked = instance.consecutive_faults >= max_faults;
                    // After a fault the guest's memory may be half-updated: start afresh (or
                    // not at all, once parked).
                    instance.state = if parked {
                        counters.operator_parked.inc();
                        State::Parked(reason.clone())
                    } else {
                        State::Fresh
                    };
                    tracing::info!(
                        operator = %spec.name,
                        reality = %pulse.reality_id,
                        sequence = pulse.sequence,
                        %reason,
                        parked,
                        "operator fault; the input's outputs were dropped"
                    );
                    let notice = OperatorFault {
                        operator: spec.name.to_string(),
                        input_sequence: pulse.sequence,
                        reason,
                        consecutive_faults: u32::try_from(instance.consecutive_faults)
                            .unwrap_or(u32::MAX),
                        parked,
                    };
                    out.push(output::envelope(pulse, &spec.name, fault_emit(&notice)));
                }
            }
        }
    }

    /// Applies a sequenced `sys.operator.param` pulse to its (operator, reality).
    fn apply_param(&mut self, pulse: &ArqonMessage) {
        let Some(set) = pulse
            .payload
            .as_ref()
            .and_then(|any| OperatorParamSet::decode(&any.value[..]).ok())
        else {
            tracing::warn!(
                sequence = pulse.sequence,
                "undecodable {PARAM_TOPIC} pulse ignored"
            );
            return;
        };
        let Some(value) = set.value.as_ref().and_then(Param::from_proto) else {
            return;
        };
        let reality_pin = (
            pulse.reality_id.clone(),
            set.operator.clone(),
            set.name.clone(),
        );
        if self
            .overrides
            .contains_key(&(set.operator.clone(), set.name.clone()))
            || self.reality_pins.contains_key(&reality_pin)
        {
            return;
        }
        let max = self.host.config().max_instances_per_shard;
        let Some(entry) = self
            .entries
            .iter_mut()
            .find(|e| *e.operator.spec.name == *set.operator)
        else {
            return;
        };
        let instance = instance_of(
            &mut entry.realities,
            &entry.operator,
            &pulse.reality_id,
            &self.overrides,
            &mut self.instances,
            max,
        );
        if let Some(instance) = instance {
            Rc::make_mut(&mut instance.params).insert(set.name, value);
        }
    }

    /// Applies a sequenced reality parameter (`sys.param.<name>`, a number or text) to every
    /// operator bound in its reality that declares a parameter of that name, unless an operator
    /// parameter set for it (`sys.control.operator.param`, a replay pin) takes precedence.
    fn apply_reality_param(&mut self, pulse: &ArqonMessage) {
        use arqonbus_proto::v1::param::Value;
        let Some(set) = pulse
            .payload
            .as_ref()
            .and_then(|any| arqonbus_proto::v1::Param::decode(&any.value[..]).ok())
        else {
            return;
        };
        let value = match set.value {
            Some(Value::Number(n)) => Param::Number(n),
            Some(Value::Text(t)) => Param::Text(t.as_str().into()),
            // Operators' parameters are numbers and text.
            Some(Value::Binary(_)) | None => return,
        };
        if super::check_param(self.host.config(), &set.name, &value).is_err() {
            return;
        }
        let max = self.host.config().max_instances_per_shard;
        for entry in &mut self.entries {
            let spec = &entry.operator.spec;
            let op = spec.name.to_string();
            if !spec.params.contains_key(&set.name)
                || !spec
                    .bindings
                    .iter()
                    .any(|b| b.reality.matches(&pulse.reality_id))
                || self.overrides.contains_key(&(op.clone(), set.name.clone()))
                || self
                    .reality_pins
                    .contains_key(&(pulse.reality_id.clone(), op, set.name.clone()))
            {
                continue;
            }
            let instance = instance_of(
                &mut entry.realities,
                &entry.operator,
                &pulse.reality_id,
                &self.overrides,
                &mut self.instances,
                max,
            );
            if let Some(instance) = instance {
                Rc::make_mut(&mut instance.params).insert(set.name.clone(), value.clone());
            }
        }
    }

    /// Picks up a new catalog. Operators that did not change keep their instances (state and
    /// parameters); a reloaded one starts afresh everywhere.
    fn refresh(&mut self) {
        if self.host.registry.version() == self.seen_version {
            return;
        }
        let (version, catalog) = self.host.registry.snapshot();
        let mut old = std::mem::take(&mut self.entries);
        self.entries = catalog
            .iter()
            .map(|operator| {
                let kept = old.iter_mut().find(|e| Arc::ptr_eq(&e.operator, operator));
                let (realities, calls, emitted, faults) = match kept {
                    Some(e) => (
                        std::mem::take(&mut e.realities),
                        e.calls,
                        e.emitted,
                        e.faults,
                    ),
                    None => Default::default(),
                };
                Entry {
                    operator: operator.clone(),
                    realities,
                    calls,
                    emitted,
                    faults,
                }
            })
            .collect();
        self.instances = self.entries.iter().map(|e| e.realities.len() as u64).sum();
        self.seen_version = version;
    }

    /// What each loaded operator did on this shard (for `/metrics`). Picks up a load or unload
    /// first, so it shows even on a shard that has had no input since.
    pub fn counts(&mut self) -> crate::metrics::OperatorCounts {
        self.refresh();
        self.entries
            .iter()
            .map(|e| crate::metrics::OperatorCount {
                name: e.operator.spec.name.clone(),
                calls: e.calls,
                emitted: e.emitted,
                faults: e.faults,
                parked_realities: e
                    .realities
                    .values()
                    .filter(|i| matches!(i.state, State::Parked(_)))
                    .count() as u64,
            })
            .collect()
    }

    /// Parameters of `operator` in `reality` as this shard holds them, if it has seen it.
    pub fn params(&self, operator: &str, reality: &str) -> Option<Params> {
        let entry = self
            .entries
            .iter()
            .find(|e| *e.operator.spec.name == *operator)?;
        entry.realities.get(reality).map(|i| (*i.params).clone())
    }

    /// Whether `operator` is parked for `reality`, and why.
    pub fn parked(&self, operator: &str, reality: &str) -> Option<String> {
        let entry = self
            .entries
            .iter()
            .find(|e| *e.operator.spec.name == *operator)?;
        match &entry.realities.get(reality)?.state {
            State::Parked(why) => Some(why.clone()),
            _ => None,
        }
    }
}

/// The instance of `entry` for `reality`, made (without instantiating) on first use; `None` when
/// the shard already holds `max` instances.
fn instance_of<'a>(
    realities: &'a mut HashMap<Arc<str>, Instance1>,
    operator: &CompiledOperator,
    reality: &str,
    overrides: &HashMap<(String, String), Param>,
    instances: &mut u64,
    max: u64,
) -> Option<&'a mut Instance1> {
    if !realities.contains_key(reality) {
        if *instances >= max {
            return None;
        }
        *instances += 1;
        let mut params = operator.spec.params.clone();
        for ((op, name), value) in overrides {
            if **op == *operator.spec.name {
                params.insert(name.clone(), value.clone());
            }
        }
        realities.insert(
            reality.into(),
            Instance1 {
                params: Rc::new(params),
                state: State::Fresh,
                consecutive_faults: 0,
            },
        );
    }
    realities.get_mut(reality)
}

/// The `Emit` that carries a fault notice.
/// Every output of one call against the operator's manifest and the circuits' edges: the
/// first that does not fit is the call's fault (fail-closed: none of its outputs go out).
fn check_types(
    spec: &super::OperatorSpec,
    input: &ArqonMessage,
    emits: &[Emit],
    hops: &dyn Sequencing,
    counters: &ShardCounters,
) -> Result<(), String> {
    for e in emits {
        let (type_url, payload) = e
            .payload
            .as_ref()
            .map_or(("", &[][..]), |p| (p.type_url.as_str(), &p.value[..]));
        let fits = match &spec.manifest {
            Some(m) => m.check_output(&e.topic, type_url, payload),
            None => Ok(()),
        }
        .and_then(|()| hops.check_hop(&input.reality_id, &e.topic, type_url));
        if let Err(why) = fits {
            counters.type_mismatches.inc();
            return Err(format!("TYPE_MISMATCH: {why}"));
        }
    }
    Ok(())
}

fn fault_emit(notice: &OperatorFault) -> Emit {
    Emit {
        topic: FAULT_TOPIC.into(),
        payload: Some(prost_types::Any {
            type_url: OperatorFault::type_url(),
            value: notice.encode_to_vec(),
        }),
        spectral: None,
    }
}

/// One call: instantiate if needed, `arqon_alloc`, copy the input, `arqon_operate`, all under one
/// fuel budget and deadline. Returns what it emitted, or why it failed (nothing of it is kept).
fn call(
    host: &OperatorHost,
    linker: &Linker<CallState>,
    operator: &CompiledOperator,
    instance: &mut Instance1,
    input: &[u8],
    counters: &ShardCounters,
) -> Result<Vec<Emit>, String> {
    let limits = operator.spec.limits;
    if matches!(instance.state, State::Fresh) {
        counters.operator_instantiations.inc();
        let loaded = Loaded::new(host, linker, operator, instance.params.clone())?;
        instance.state = State::Ready(Box::new(loaded));
    }
    let State::Ready(loaded) = &mut instance.state else {
        return Err("the operator is parked".into());
    };
    let store = &mut loaded.store;
    {
        let data = store.data_mut();
        data.params = instance.params.clone();
        data.emitted.clear();
        data.emitted_bytes = 0;
        data.refused = None;
    }
    arm(store, host, &limits)?;
    let len = u32::try_from(input.len()).map_err(|_| "input too large".to_string())?;
    let ptr = loaded
        .alloc
        .call(&mut *store, len)
        .map_err(|e| describe(&e, store, &limits))?;
    let memory = loaded.memory.data_mut(&mut *store);
    let start = ptr as usize;
    let end = start
        .checked_add(input.len())
        .filter(|&end| ptr != 0 && end <= memory.len())
        .ok_or_else(|| format!("arqon_alloc({len}) returned {ptr:#x}, not room in memory"))?;
    memory[start..end].copy_from_slice(input);
    let status = loaded
        .operate
        .call(&mut *store, (ptr, len))
        .map_err(|e| describe(&e, store, &limits))?;
    if status != 0 {
        return Err(format!("arqon_operate returned {status} (not 0: failed)"));
    }
    Ok(std::mem::take(&mut store.data_mut().emitted))
}

impl Loaded {
    fn new(
        host: &OperatorHost,
        linker: &Linker<CallState>,
        operator: &CompiledOperator,
        params: Rc<Params>,
    ) -> Result<Self, String> {
        let limits = operator.spec.limits;
        let state = CallState {
            limits: crate::policy::instance_limits(limits.max_memory_pages),
            params,
            emitted: Vec::new(),
            emitted_bytes: 0,
            caps: limits,
            refused: None,
        };
        let mut store = Store::new(host.engine(), state);
        store.limiter(|s| &mut s.limits);
        arm(&mut store, host, &limits)?;
        let instance: Instance = linker
            .instantiate(&mut store, &operator.module)
            .map_err(|e| format!("cannot instantiate: {}", describe(&e, &store, &limits)))?;
        let memory = instance
            .get_memory(&mut store, "memory")
            .ok_or("the module does not export `memory`")?;
        let alloc = instance
            .get_typed_func::<u32, u32>(&mut store, "arqon_alloc")
            .map_err(|e| format!("export `arqon_alloc: (i32) -> i32` is missing: {e}"))?;
        let operate = instance
            .get_typed_func::<(u32, u32), i32>(&mut store, "arqon_operate")
            .map_err(|e| format!("export `arqon_operate: (i32, i32) -> i32` is missing: {e}"))?;
        // Emits during instantiation (a start function) are not outputs of any input.
        store.data_mut().emitted.clear();
        Ok(Self {
            store,
            memory,
            alloc,
            operate,
        })
    }
}

fn arm(store: &mut Store<CallState>, host: &OperatorHost, limits: &Limits) -> Result<(), String> {
    store
        .set_fuel(limits.fuel_per_call)
        .map_err(|e| format!("cannot set fuel: {e}"))?;
    store.set_epoch_deadline(host.deadline_ticks(limits.deadline_ms));
    Ok(())
}

/// Says why a call failed: an import's refusal, or the limit that stopped it.
fn describe(e: &wasmtime::Error, store: &Store<CallState>, limits: &Limits) -> String {
    match &store.data().refused {
        Some(reason) => reason.clone(),
        None => crate::policy::describe_failure(
            e,
            limits.fuel_per_call,
            limits.deadline_ms,
            limits.max_memory_pages,
        ),
    }
}

/// The guest's memory, from inside a host call.
fn memory(caller: &mut Caller<'_, CallState>) -> Result<Memory, wasmtime::Error> {
    match caller.get_export("memory") {
        Some(Extern::Memory(m)) => Ok(m),
        _ => Err(refuse(caller, "the module does not export `memory`".into())),
    }
}

/// Records why an import refused the call and returns the trap that ends it.
fn refuse(caller: &mut Caller<'_, CallState>, reason: String) -> wasmtime::Error {
    caller.data_mut().refused = Some(reason.clone());
    wasmtime::Error::msg(reason)
}

fn read_bytes(
    caller: &mut Caller<'_, CallState>,
    ptr: u32,
    len: u32,
) -> Result<Vec<u8>, wasmtime::Error> {
    let mem = memory(caller)?;
    let data = mem.data(&*caller);
    let (start, end) = (ptr as usize, ptr as usize + len as usize);
    match data.get(start..end) {
        Some(bytes) => Ok(bytes.to_vec()),
        None => Err(refuse(
            caller,
            format!("an import was given {len} bytes at {ptr:#x}, outside memory"),
        )),
    }
}

fn write_bytes(
    caller: &mut Caller<'_, CallState>,
    ptr: u32,
    bytes: &[u8],
) -> Result<(), wasmtime::Error> {
    let mem = memory(caller)?;
    let data = mem.data_mut(&mut *caller);
    let start = ptr as usize;
    match data.get_mut(start..start + bytes.len()) {
        Some(dst) => {
            dst.copy_from_slice(bytes);
            Ok(())
        }
        None => Err(refuse(
            caller,
            format!(
                "an import was asked to write {} bytes at {ptr:#x}, outside memory",
                bytes.len()
            ),
        )),
    }
}

/// The host's functions: the only imports an operator may have (docs/operator-abi.md).
fn host_functions(engine: &wasmtime::Engine) -> Linker<CallState> {
    let mut linker = Linker::new(engine);
    linker
        .func_wrap(
            IMPORT_MODULE,
            "emit",
            |mut caller: Caller<'_, CallState>,
             ptr: u32,
             len: u32|
             -> Result<i32, wasmtime::Error> {
                let caps = caller.data().caps;
                let (count, bytes) = (
                    caller.data().emitted.len() as u64,
                    caller.data().emitted_bytes,
                );
                if count + 1 > caps.max_emits_per_call {
                    let why = format!(
                        "emitted more than max_emits_per_call ({}) pulses for one input",
                        caps.max_emits_per_call
                    );
                    return Err(refuse(&mut caller, why));
                }
                if bytes + u64::from(len) > caps.max_emit_bytes_per_call {
                    let why = format!(
                        "emitted more than max_emit_bytes_per_call ({}) bytes for one input",
                        caps.max_emit_bytes_per_call
                    );
                    return Err(refuse(&mut caller, why));
                }
                let raw = read_bytes(&mut caller, ptr, len)?;
                let emit = match Emit::decode(&raw[..]) {
                    Ok(e) => e,
                    Err(e) => {
                        return Err(refuse(
                            &mut caller,
                            format!("emit: not an arqon.operator.v1.Emit: {e}"),
                        ))
                    }
                };
                if let Err(e) = validate_topic(&emit.topic) {
                    let why = format!("emit: topic `{}` is invalid: {e}", emit.topic);
                    return Err(refuse(&mut caller, why));
                }
                if emit.topic.starts_with("sys.") {
                    let why = format!("emit: topic `{}` is reserved for the bus", emit.topic);
                    return Err(refuse(&mut caller, why));
                }
                let data = caller.data_mut();
                data.emitted_bytes += u64::from(len);
                data.emitted.push(emit);
                Ok(0)
            },
        )
        .expect("a fresh linker has no `emit` yet");
    linker
        .func_wrap(
            IMPORT_MODULE,
            "param_f64",
            |mut caller: Caller<'_, CallState>,
             name_ptr: u32,
             name_len: u32,
             out_ptr: u32|
             -> Result<i32, wasmtime::Error> {
                let name = read_bytes(&mut caller, name_ptr, name_len)?;
                let value = std::str::from_utf8(&name).ok().and_then(|n| {
                    match caller.data().params.get(n) {
                        Some(Param::Number(v)) => Some(*v),
                        _ => None,
                    }
                });
                match value {
                    Some(v) => {
                        write_bytes(&mut caller, out_ptr, &v.to_le_bytes())?;
                        Ok(1)
                    }
                    None => Ok(0),
                }
            },
        )
        .expect("a fresh linker has no `param_f64` yet");
    linker
        .func_wrap(
            IMPORT_MODULE,
            "param_text",
            |mut caller: Caller<'_, CallState>,
             name_ptr: u32,
             name_len: u32,
             out_ptr: u32,
             out_cap: u32|
             -> Result<i32, wasmtime::Error> {
                let name = read_bytes(&mut caller, name_ptr, name_len)?;
                let value = std::str::from_utf8(&name).ok().and_then(|n| {
                    match caller.data().params.get(n) {
                        Some(Param::Text(t)) => Some(t.clone()),
                        _ => None,
                    }
                });
                match value {
                    Some(t) => {
                        let n = t.len().min(out_cap as usize);
                        write_bytes(&mut caller, out_ptr, &t.as_bytes()[..n])?;
                        Ok(i32::try_from(t.len()).unwrap_or(i32::MAX))
                    }
                    None => Ok(-1),
                }
            },
        )
        .expect("a fresh linker has no `param_text` yet");
    linker
}
