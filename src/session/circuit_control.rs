//! `sys.control.circuit.apply|remove`: a controller installs or removes a typed circuit.
//!
//! Apply checks the circuit's shape and every edge's types (`circuit::check`), then the
//! operators online now against their stages; a refusal names the edge or the stage. The change
//! is audited before it takes effect, like every governance action.
//!
//! A controller of a token with grants installs and removes circuits only in realities its
//! publish grants cover (`Identity::check_reality`): the circuit's reality, and the reality of
//! the circuit of that name it would replace or remove.

use std::sync::Arc;

use arqonbus_proto::circuit::v1::{Circuit, CircuitRemove};
use arqonbus_proto::v1::ArqonMessage;
use prost::Message;
use serde_json::json;

use super::control::{
    check_reality, decode, install_audited, refuse, remove_audited, Audited, Refusal,
};
use super::Conn;
use crate::circuit;
use crate::shard::Shard;

/// May this controller install or remove circuit `name` of `reality`? A circuit of that name
/// already installed (in any reality) is replaced or removed, so its reality is checked too.
fn check_circuit_realities(
    shard: &Shard,
    conn: &Conn,
    name: &str,
    reality: Option<&str>,
) -> Result<(), Refusal> {
    if let Some(reality) = reality {
        check_reality(conn, reality, "installs a circuit in")?;
    }
    match shard.shield.circuits.registry.get(name) {
        Some(installed) => check_reality(
            conn,
            &installed.circuit.reality_id,
            "replaces or removes a circuit of",
        ),
        None => Ok(()),
    }
}

pub async fn apply(
    shard: &Shard,
    conn: &Conn,
    audited: &Audited,
    message: &ArqonMessage,
) -> Result<(), Refusal> {
    let circuits = &shard.shield.circuits;
    let hosted: Vec<_> = shard
        .operator_host()
        .registry
        .snapshot()
        .1
        .iter()
        .map(|op| (op.spec.name.to_string(), op.spec.manifest.clone()))
        .collect();
    let checked = decode::<Circuit>(message).and_then(|c| {
        check_circuit_realities(shard, conn, &c.name, Some(c.reality_id.as_str()))?;
        let checked = circuit::check(c).map_err(Refusal::invalid)?;
        circuits
            .check_online(&checked, &hosted)
            .map_err(Refusal::invalid)?;
        Ok(checked)
    });
    let checked = match checked {
        Ok(c) => c,
        Err(refusal) => return refuse(shard, audited, refusal).await,
    };
    let details = json!({
        "reality_id": checked.circuit.reality_id,
        "stages": checked.circuit.stages.len(),
        "edges": checked.edges.iter().map(|e| json!({
            "topic": e.topic, "type_url": e.type_url, "from": e.from, "to": e.to,
        })).collect::<Vec<_>>(),
    });
    let registry = circuits.registry.clone();
    install_audited(shard, audited, registry, Arc::new(checked), details).await
}

pub async fn remove(
    shard: &Shard,
    conn: &Conn,
    audited: &Audited,
    message: &ArqonMessage,
) -> Result<(), Refusal> {
    let remove: CircuitRemove = match decode(message).and_then(|r: CircuitRemove| {
        check_circuit_realities(shard, conn, &r.name, None).map(|()| r)
    }) {
        Ok(r) => r,
        Err(refusal) => return refuse(shard, audited, refusal).await,
    };
    let registry = shard.shield.circuits.registry.clone();
    remove_audited(shard, audited, registry, remove.name).await
}

/// The circuit a control pulse names, for the audit record.
pub fn target_of(topic: &str, payload: &[u8]) -> Option<String> {
    match topic {
        circuit::APPLY_TOPIC => Circuit::decode(payload).ok().map(|c| c.name),
        circuit::REMOVE_TOPIC => CircuitRemove::decode(payload).ok().map(|c| c.name),
        _ => None,
    }
}
