//! `sys.control.param.set`: a controller sets a parameter of the control pulse's reality.
//!
//! The change is checked (name, value), audited, then sequenced into the reality on
//! `sys.param.<name>` by its owner, which gives it the name's next version; the publisher's
//! `PubAck` carries that sequence. From there it is a pulse like any other (stored when the
//! reality is retained, so a replay sees it at its position) except for who receives it: every
//! connection subscribed to anything in the reality, and every new subscription first.
//!
//! A controller of a token with grants sets parameters only of realities its publish grants
//! cover (`Identity::check_reality`); a refusal is PERMISSION_DENIED and audited.

use std::rc::Rc;

use arqonbus_proto::v1::{ArqonMessage, Param};
use prost::{Message, Name};
use serde_json::json;

use super::control::{
    answer_refusal, audit_then_sequence, check_reality, decode, refuse, Audited, Refusal,
};
use super::Conn;
use crate::param;
use crate::shard::Shard;

pub async fn set(
    shard: &Rc<Shard>,
    conn: &Rc<Conn>,
    audited: &Audited,
    correlation_id: u64,
    message: ArqonMessage,
    ack: bool,
) {
    let max_value = shard.config.limits.max_payload_bytes as usize;
    // Permission first: a controller outside its grants learns nothing about the payload's
    // faults either.
    let checked = check_reality(conn, &message.reality_id, "sets a parameter of")
        .and_then(|()| decode::<Param>(&message))
        .and_then(|set| {
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
    let value = Param {
        name: set.name,
        value: set.value,
        // The owner gives the version.
        version: 0,
        set_by: audited.actor.clone(),
    };
    let payload = prost_types::Any {
        type_url: Param::type_url(),
        value: value.encode_to_vec(),
    };
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
