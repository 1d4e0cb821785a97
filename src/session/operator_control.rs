//! `sys.control.operator.*`: controllers load, unload and tune hosted operators.
//!
//! - `load` (`arqon.operator.v1.OperatorLoad`): compiled on the blocking pool; a module that does
//!   not compile is refused and the operator in place stays. A name already loaded is replaced
//!   (its instances start afresh on every shard).
//! - `unload` (`OperatorUnload`).
//! - `param` (`OperatorParamSet`): audited, then sequenced into the control pulse's reality on
//!   `sys.operator.param`, where the owner applies it at that position (so a replay of the
//!   reality's log sees the change exactly where it happened). The publisher's `PubAck` carries
//!   that sequence.
//!
//! - `fork` (`RealityFork`, on `sys.control.reality.fork`): see ARCHITECTURE.md, "Replay and
//!   forks".
//!
//! Every one of them is audited before it takes effect, like the policy topics (see `control`).
//! A controller of a token with grants binds, tunes and forks only realities its publish grants
//! cover: the bindings of a load (and of the operator it replaces), of the operator an unload
//! removes, the reality of a parameter change, and both the source and the new reality of a fork
//! (`Identity::check_binding`, `Identity::check_reality`).

use std::rc::Rc;
use std::sync::Arc;

use arqonbus_proto::operator::v1::{OperatorLoad, OperatorParamSet, OperatorUnload, RealityFork};
use arqonbus_proto::v1::ArqonMessage;
use prost::{Message, Name};
use serde_json::json;

use super::control::{
    answer_refusal, audit_then_sequence, audit_unavailable, check_bindings, check_reality, decode,
    install_audited, refuse, remove_audited, Audited, Refusal,
};
use super::Conn;
use crate::config::Config;
use crate::operator::{check_param, output_id, CompiledOperator, OperatorSpec, Param, PARAM_TOPIC};
use crate::replay::{Options, Pin, Range};
use crate::routing::validate_reality;
use crate::shard::{ForkImport, Origin, Shard, ToOwner};

pub const LOAD: &str = "sys.control.operator.load";
pub const UNLOAD: &str = "sys.control.operator.unload";
pub const PARAM: &str = "sys.control.operator.param";
pub const FORK: &str = "sys.control.reality.fork";

pub async fn load(
    shard: &Shard,
    conn: &super::Conn,
    audited: &Audited,
    message: &ArqonMessage,
) -> Result<(), Refusal> {
    let prepared = match prepare_load(shard, message).await {
        Ok(op) => op,
        Err(refusal) => return refuse(shard, audited, refusal).await,
    };
    // A load replaces the operator of its name: what that one binds is taken away too.
    let replaced = shard.operator_host().registry.get(&prepared.spec.name);
    let checked = check_bindings(conn, &prepared.spec.bindings).and_then(|()| match &replaced {
        Some(old) => check_bindings(conn, &old.spec.bindings),
        None => Ok(()),
    });
    if let Err(refusal) = checked {
        return refuse(shard, audited, refusal).await;
    }
    let details = json!({
        "sha256": prepared.sha256_hex(),
        "wasm_bytes": prepared.wasm_bytes,
        "spec": prepared.spec.describe(),
    });
    let registry = shard.operator_host().registry.clone();
    install_audited(shard, audited, registry, prepared, details).await
}

/// Decodes, checks and compiles (on the blocking pool) the operator a load pulse carries.
async fn prepare_load(
    shard: &Shard,
    message: &ArqonMessage,
) -> Result<Arc<CompiledOperator>, Refusal> {
    let load: OperatorLoad = decode(message)?;
    let host = shard.operator_host().clone();
    let (spec, wasm) = OperatorSpec::from_load(host.config(), &load)
        .map_err(|e| Refusal::invalid(e.to_string()))?;
    shard
        .shield
        .circuits
        .check_hosted(&spec.name, spec.manifest.as_deref())
        .map_err(|why| Refusal::invalid(format!("operator `{}`: {why}", spec.name)))?;
    let compiled = glommio::executor()
        .spawn_blocking(move || host.compile(spec, &wasm))
        .await;
    compiled
        .map(Arc::new)
        .map_err(|e| Refusal::invalid(e.to_string()))
}

pub async fn unload(
    shard: &Shard,
    conn: &Conn,
    audited: &Audited,
    message: &ArqonMessage,
) -> Result<(), Refusal> {
    let unload: OperatorUnload = match decode(message) {
        Ok(u) => u,
        Err(refusal) => return refuse(shard, audited, refusal).await,
    };
    let registry = shard.operator_host().registry.clone();
    if let Some(installed) = registry.get(&unload.name) {
        if let Err(refusal) = check_bindings(conn, &installed.spec.bindings) {
            return refuse(shard, audited, refusal).await;
        }
    }
    remove_audited(shard, audited, registry, unload.name).await
}

/// Checks a parameter change: the operator is loaded, the value set and within bounds.
fn check_param_set(shard: &Shard, set: &OperatorParamSet) -> Result<Param, Refusal> {
    let host = shard.operator_host();
    if host.registry.get(&set.operator).is_none() {
        return Err(Refusal::invalid(format!(
            "no operator named `{}` is loaded",
            set.operator
        )));
    }
    let value = set
        .value
        .as_ref()
        .and_then(Param::from_proto)
        .ok_or_else(|| Refusal::invalid("OperatorParamSet.value is empty"))?;
    check_param(host.config(), &set.name, &value).map_err(Refusal::invalid)?;
    Ok(value)
}

/// Audits a parameter change, then sends it to the reality's owner to be sequenced; the owner
/// answers the publisher (PubAck with the change's sequence, or the error).
pub async fn param(
    shard: &Rc<Shard>,
    conn: &Rc<Conn>,
    audited: &Audited,
    correlation_id: u64,
    message: ArqonMessage,
    ack: bool,
) {
    let checked = check_reality(conn, &message.reality_id, "sets an operator parameter in")
        .and_then(|()| decode::<OperatorParamSet>(&message))
        .and_then(|set| check_param_set(shard, &set).map(|value| (set, value)));
    let (set, value) = match checked {
        Ok(ok) => ok,
        Err(refusal) => {
            let Err(refusal) = refuse(shard, audited, refusal).await else {
                return;
            };
            return answer_refusal(shard, conn, correlation_id, &message, audited, refusal);
        }
    };
    let entry = audited.entry(
        Ok(()),
        json!({ "operator": set.operator, "name": set.name, "value": value.to_json() }),
    );
    let payload = prost_types::Any {
        type_url: OperatorParamSet::type_url(),
        value: set.encode_to_vec(),
    };
    let topic = PARAM_TOPIC.into();
    audit_then_sequence(
        shard,
        conn,
        audited,
        correlation_id,
        &message,
        ack,
        entry,
        topic,
        payload,
    )
    .await;
}

/// What a fork request asks for, checked: the new reality, the fork point, the pins.
fn check_fork(
    shard: &Shard,
    source: &str,
    fork: &RealityFork,
) -> Result<(String, Vec<Pin>), Refusal> {
    let config = &shard.config;
    let name_ok = !fork.name.is_empty()
        && fork
            .name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if !name_ok {
        return Err(Refusal::invalid(format!(
            "fork name `{}` must be [A-Za-z0-9_.-], at least one byte",
            fork.name
        )));
    }
    let target = format!("{source}~{}", fork.name);
    validate_reality(&target)
        .map_err(|e| Refusal::invalid(format!("fork reality `{target}` is invalid: {e}")))?;
    if config.retention_for(source).is_none() {
        return Err(Refusal::invalid(format!(
            "reality `{source}` is not retained: only a recorded reality can be forked"
        )));
    }
    if config.retention_for(&target).is_none() {
        return Err(Refusal::invalid(format!(
            "no [[retention]] rule matches the fork `{target}`; add one (e.g. realities = \"{source}~*\")"
        )));
    }
    if fork.from_sequence == 0 {
        return Err(Refusal::invalid(
            "RealityFork.from_sequence must be at least 1",
        ));
    }
    let mut pins = Vec::new();
    for (key, value) in &fork.params {
        let value = Param::from_proto(value)
            .ok_or_else(|| Refusal::invalid(format!("parameter `{key}` has no value")))?;
        let (operator, name) = key
            .split_once('.')
            .ok_or_else(|| Refusal::invalid(format!("parameter `{key}` must be OPERATOR.NAME")))?;
        if shard.operator_host().registry.get(operator).is_none() {
            return Err(Refusal::invalid(format!(
                "no operator named `{operator}` is loaded"
            )));
        }
        check_param(shard.operator_host().config(), name, &value).map_err(Refusal::invalid)?;
        pins.push(Pin {
            operator: operator.to_owned(),
            name: name.to_owned(),
            value,
        });
    }
    Ok((target, pins))
}

/// Replays the source offline (read-only, on the blocking pool) into memory, renamed for the
/// fork: its reality id, its own causal entry, and its outputs' ids (derived from the reality).
fn replay_fork(
    config: &Config,
    source: &str,
    target: &str,
    fork_at: u64,
    pins: Vec<Pin>,
) -> Result<Vec<bytes::Bytes>, String> {
    let options = Options {
        data_dir: config.data_dir.clone(),
        reality: source.to_owned(),
        range: Range::default(),
        pins,
        fork_at: Some(fork_at),
        out: None,
        recorded_out: None,
        keep_bytes: Some(config.operator.max_fork_bytes),
    };
    let (_, records) = crate::replay::replay_kept(config, &options).map_err(|e| e.to_string())?;
    records
        .into_iter()
        .map(|bytes| {
            let mut m = ArqonMessage::decode(&bytes[..]).map_err(|e| e.to_string())?;
            m.reality_id = target.to_owned();
            if let Some(own) = m.causal.remove(source) {
                m.causal.insert(target.to_owned(), own);
            }
            if !m.emitted_by.is_empty() {
                m.id = output_id(target, m.sequence, m.timestamp_unix_nanos);
            }
            Ok(bytes::Bytes::from(m.encode_to_vec()))
        })
        .collect()
}

/// `sys.control.reality.fork`: checks, replays the source into memory, audits, then hands the
/// records to the fork's owner, which writes them and answers the controller.
pub async fn fork(
    shard: &Rc<Shard>,
    conn: &Rc<Conn>,
    audited: &Audited,
    correlation_id: u64,
    message: ArqonMessage,
    ack: bool,
) {
    let refused = |refusal: Refusal| async {
        let Err(refusal) = refuse(shard, audited, refusal).await else {
            return;
        };
        answer_refusal(shard, conn, correlation_id, &message, audited, refusal);
    };
    // Both ends: a fork reads the source's log and writes a reality of its own.
    if let Err(refusal) = check_reality(conn, &message.reality_id, "forks") {
        return refused(refusal).await;
    }
    let request: RealityFork = match decode(&message) {
        Ok(r) => r,
        Err(refusal) => return refused(refusal).await,
    };
    let (target, pins) = match check_fork(shard, &message.reality_id, &request) {
        Ok(ok) => ok,
        Err(refusal) => return refused(refusal).await,
    };
    if let Err(refusal) = check_reality(conn, &target, "forks into") {
        return refused(refusal).await;
    }
    let config = (*shard.config).clone();
    let (source, to, at, p) = (
        message.reality_id.clone(),
        target.clone(),
        request.from_sequence,
        pins.clone(),
    );
    let replayed = glommio::executor()
        .spawn_blocking(move || replay_fork(&config, &source, &to, at, p))
        .await;
    let records = match replayed {
        Ok(records) => records,
        Err(why) => {
            return refused(Refusal::invalid(format!("the fork's replay failed: {why}"))).await
        }
    };
    let entry = audited.entry(
        Ok(()),
        json!({
            "fork": target,
            "from_sequence": request.from_sequence,
            "records": records.len(),
            "params": pins.iter().map(|p| (format!("{}.{}", p.operator, p.name), p.value.to_json()))
                .collect::<serde_json::Map<_, _>>(),
        }),
    );
    if let Err(e) = shard.audit.commit_async(move |w| w.append(entry)).await {
        tracing::error!(error = %e, "cannot write the audit log");
        return answer_refusal(
            shard,
            conn,
            correlation_id,
            &message,
            audited,
            audit_unavailable(e),
        );
    }
    let import = ForkImport {
        reality: target.clone(),
        records,
        fork_at: request.from_sequence,
        pins,
        origin: Origin {
            shard: shard.id,
            conn: conn.id,
            correlation_id,
            ack,
            retained_charge: 0,
        },
    };
    let owner = shard.owner_of(&target);
    if owner == shard.id {
        shard.clone().import(import).await;
    } else {
        shard
            .send_to_owner(owner, ToOwner::Import(Box::new(import)))
            .await;
    }
}

/// The operator a control pulse names, for its audit record.
pub fn target_of(topic: &str, payload: &[u8]) -> String {
    match topic {
        LOAD => OperatorLoad::decode(payload).map(|l| l.name),
        UNLOAD => OperatorUnload::decode(payload).map(|u| u.name),
        PARAM => OperatorParamSet::decode(payload).map(|p| format!("{}.{}", p.operator, p.name)),
        FORK => RealityFork::decode(payload).map(|f| f.name),
        _ => Ok(String::new()),
    }
    .unwrap_or_default()
}
