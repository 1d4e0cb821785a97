//! `Publish` → the shield → sequenced by the reality's owner → `PubAck` when asked.
//!
//! The shield runs on the connection's shard, in this order: envelope checks (reality and topic
//! syntax, payload size), then `sys.control.*` pulses go to their own handler (governed by the
//! controller role, not by policies, so no policy can lock controllers out), then every CASIL
//! policy bound to the pulse. Only a pulse that passes all of them is sent to its owner.

use std::rc::Rc;

use arqonbus_proto::v1::{ErrorCode, Publish};

use super::{control, reject, Conn};
use crate::policy::Decision;
use crate::routing::{validate_reality, validate_topic};
use crate::shard::{traceparent, Origin, Shard, ToOwner};

pub async fn handle(
    shard: &Rc<Shard>,
    conn: &Rc<Conn>,
    correlation_id: u64,
    publish: Publish,
    frame_bytes: usize,
) {
    let Some(message) = publish.message else {
        return reject(
            shard,
            conn,
            correlation_id,
            ErrorCode::InvalidRequest,
            "Publish carries no message",
        );
    };
    let refused = |code: ErrorCode, msg: &str| {
        tracing::debug!(
            shard = shard.id,
            conn = conn.id,
            reality = %message.reality_id,
            topic = %message.topic,
            traceparent = traceparent(&message),
            code = ?code,
            reason = msg,
            "publish refused"
        );
        reject(shard, conn, correlation_id, code, msg);
    };
    if let Err(e) = validate_reality(&message.reality_id) {
        let msg = format!("reality `{}` is invalid: {e}", message.reality_id);
        return refused(ErrorCode::InvalidReality, &msg);
    }
    if let Err(e) = validate_topic(&message.topic) {
        let msg = format!("topic `{}` is invalid: {e}", message.topic);
        return refused(ErrorCode::InvalidTopic, &msg);
    }
    let payload_bytes = message.payload.as_ref().map_or(0, |p| p.value.len()) as u64;
    if payload_bytes > shard.config.limits.max_payload_bytes {
        let msg = format!(
            "payload of {payload_bytes} bytes exceeds limits.max_payload_bytes ({})",
            shard.config.limits.max_payload_bytes
        );
        return reject(shard, conn, correlation_id, ErrorCode::LimitExceeded, &msg);
    }
    if control::is_control(&message.topic) {
        return control::handle(shard, conn, correlation_id, message, publish.ack).await;
    }
    let decision = shard
        .policies
        .borrow_mut()
        .check(&message, frame_bytes, &shard.counters);
    match decision {
        Decision::Allow => {}
        Decision::Denied {
            policy,
            code,
            reason,
        } => {
            shard.counters.policy_denials.inc();
            let msg = format!("policy `{policy}` denied the pulse (reason {code}): {reason}");
            return reject(shard, conn, correlation_id, ErrorCode::PolicyDenied, &msg);
        }
        Decision::Fault { policy, reason } => {
            shard.counters.policy_faults.inc();
            tracing::debug!(shard = shard.id, %policy, %reason, "policy fault blocked a pulse");
            let msg = format!("policy `{policy}` failed, so the pulse is blocked: {reason}");
            return reject(shard, conn, correlation_id, ErrorCode::PolicyFault, &msg);
        }
    }
    let origin = Origin {
        shard: shard.id,
        conn: conn.id,
        correlation_id,
        ack: publish.ack,
    };
    let owner = shard.owner_of(&message.reality_id);
    if owner == shard.id {
        shard.sequence(message, origin).await;
    } else {
        shard
            .send_to_owner(owner, ToOwner::Publish(Box::new((message, origin))))
            .await;
    }
}
