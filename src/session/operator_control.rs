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
//! Every one of them is audited before it takes effect, like the policy topics (see `control`).

use std::rc::Rc;
use std::sync::Arc;

use arqonbus_proto::operator::v1::{OperatorLoad, OperatorParamSet, OperatorUnload};
use arqonbus_proto::v1::ArqonMessage;
use prost::{Message, Name};
use serde_json::json;

use super::control::{
    answer_refusal, audit_unavailable, decode, install_audited, refuse, remove_audited, Audited,
    Refusal,
};
use super::Conn;
use crate::operator::{check_param, CompiledOperator, OperatorSpec, Param, PARAM_TOPIC};
use crate::shard::{Origin, Shard, ToOwner};

pub const LOAD: &str = "sys.control.operator.load";
pub const UNLOAD: &str = "sys.control.operator.unload";
pub const PARAM: &str = "sys.control.operator.param";

pub async fn load(shard: &Shard, audited: &Audited, message: &ArqonMessage) -> Result<(), Refusal> {
    let prepared = match prepare_load(shard, message).await {
        Ok(op) => op,
        Err(refusal) => return refuse(shard, audited, refusal).await,
    };
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
    let compiled = glommio::executor()
        .spawn_blocking(move || host.compile(spec, &wasm))
        .await;
    compiled
        .map(Arc::new)
        .map_err(|e| Refusal::invalid(e.to_string()))
}

pub async fn unload(
    shard: &Shard,
    audited: &Audited,
    message: &ArqonMessage,
) -> Result<(), Refusal> {
    let unload: OperatorUnload = match decode(message) {
        Ok(u) => u,
        Err(refusal) => return refuse(shard, audited, refusal).await,
    };
    let registry = shard.operator_host().registry.clone();
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
    let checked = decode::<OperatorParamSet>(&message)
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
    if let Err(e) = shard.audit.commit_async(move |w| w.append(entry)).await {
        tracing::error!(error = %e, "cannot write the audit log");
        let refusal = audit_unavailable(e);
        return answer_refusal(shard, conn, correlation_id, &message, audited, refusal);
    }
    tracing::info!(
        operator = %set.operator,
        reality = %message.reality_id,
        name = %set.name,
        actor = %audited.actor,
        "operator parameter change sent to be sequenced"
    );
    let pulse = ArqonMessage {
        topic: PARAM_TOPIC.into(),
        reality_id: message.reality_id.clone(),
        producer_id: message.producer_id.clone(),
        trace_context: message.trace_context.clone(),
        payload: Some(prost_types::Any {
            type_url: OperatorParamSet::type_url(),
            value: set.encode_to_vec(),
        }),
        ..Default::default()
    };
    let origin = Origin {
        shard: shard.id,
        conn: conn.id,
        correlation_id,
        ack,
    };
    let owner = shard.owner_of(&pulse.reality_id);
    if owner == shard.id {
        shard.sequence(pulse, origin).await;
    } else {
        shard
            .send_to_owner(owner, ToOwner::Publish(Box::new((pulse, origin))))
            .await;
    }
}

/// The operator a control pulse names, for its audit record.
pub fn target_of(topic: &str, payload: &[u8]) -> String {
    match topic {
        LOAD => OperatorLoad::decode(payload).map(|l| l.name),
        UNLOAD => OperatorUnload::decode(payload).map(|u| u.name),
        PARAM => OperatorParamSet::decode(payload).map(|p| format!("{}.{}", p.operator, p.name)),
        _ => Ok(String::new()),
    }
    .unwrap_or_default()
}
