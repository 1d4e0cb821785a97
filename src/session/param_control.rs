//! `sys.control.param.set`: a controller sets a parameter of the control pulse's reality.
//!
//! The change is checked (name, value), audited, then sequenced into the reality on
//! `sys.param.<name>` by its owner, which gives it the name's next version; the publisher's
//! `PubAck` carries that sequence. From there it is a pulse like any other (stored when the
//! reality is retained, so a replay sees it at its position) except for who receives it: every
//! connection subscribed to anything in the reality, and every new subscription first.

use std::rc::Rc;

use arqonbus_proto::v1::{ArqonMessage, Param};
use prost::{Message, Name};
use serde_json::json;

use super::control::{answer_refusal, audit_unavailable, decode, refuse, Audited, Refusal};
use super::Conn;
use crate::param;
use crate::shard::{Origin, Shard};

pub async fn set(
    shard: &Rc<Shard>,
    conn: &Rc<Conn>,
    audited: &Audited,
    correlation_id: u64,
    message: ArqonMessage,
    ack: bool,
) {
    let max_value = shard.config.limits.max_payload_bytes as usize;
    let checked = decode::<Param>(&message).and_then(|set| {
        param::check(&set, max_value)
            .map(|topic| (set, topic))
            .map_err(Refusal::invalid)
    });
    let (set, topic) = match checked {
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
        json!({
            "reality_id": message.reality_id,
            "name": set.name,
            "value": param::value_json(&set.value),
        }),
    );
    if let Err(e) = shard.audit.commit_async(move |w| w.append(entry)).await {
        tracing::error!(error = %e, "cannot write the audit log");
        let refusal = audit_unavailable(e);
        return answer_refusal(shard, conn, correlation_id, &message, audited, refusal);
    }
    tracing::info!(
        reality = %message.reality_id,
        name = %set.name,
        actor = %audited.actor,
        "parameter change sent to be sequenced"
    );
    let value = Param {
        name: set.name,
        value: set.value,
        // The owner gives the version.
        version: 0,
        set_by: audited.actor.clone(),
    };
    let pulse = ArqonMessage {
        topic,
        reality_id: message.reality_id.clone(),
        producer_id: message.producer_id.clone(),
        trace_context: message.trace_context.clone(),
        payload: Some(prost_types::Any {
            type_url: Param::type_url(),
            value: value.encode_to_vec(),
        }),
        ..Default::default()
    };
    let origin = Origin {
        shard: shard.id,
        conn: conn.id,
        correlation_id,
        ack,
    };
    shard.sequence_at_owner(pulse, origin).await;
}
