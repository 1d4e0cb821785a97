//! `Publish` → the shield → sequenced by the reality's owner → `PubAck` when asked.
//!
//! The shield runs on the connection's shard, in this order: envelope checks (reality and topic
//! syntax, payload size), then `sys.control.*` pulses go to their own handler (governed by the
//! controller role, audited, not subject to grants, quotas or policies, so nothing can lock
//! controllers out), then the session's grants and its tenant's publish rate, then every CASIL
//! policy bound to the pulse, and last the tenant's retained-bytes quota (so only a pulse that
//! will be stored counts). Only a pulse that passes all of them is sent to its owner. Before any
//! of it, the envelope's `tenant` and `subject` are overwritten with the session's authenticated
//! identity: what policies, the audit log and subscribers trust (`producer_id` is the client's
//! unverified claim).

use std::rc::Rc;
use std::time::Duration;

use arqonbus_proto::v1::{ArqonMessage, ErrorCode, Publish};
use prost::Message;

use super::{control, reject, reject_unacked, Conn, Shielded};
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
    let Some(mut message) = publish.message else {
        return reject(
            shard,
            conn,
            correlation_id,
            ErrorCode::InvalidRequest,
            "Publish carries no message",
        );
    };
    stamp_identity(conn, &mut message);
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
    let max_causal = shard.config.limits.max_causal_entries;
    if message.causal.len() as u64 > max_causal {
        // Every entry is a dependency a causal subscriber's gate must check; a context this
        // large is a client that merges without bound, or an attack on that gate.
        let msg = format!(
            "causal context has {} entries, more than limits.max_causal_entries ({max_causal})",
            message.causal.len()
        );
        return refused(ErrorCode::LimitExceeded, &msg);
    }
    if control::is_control(&message.topic) {
        // Boxed: control pulses are rare and their future is large; inline, every
        // connection's task would carry its size.
        return Box::pin(control::handle(
            shard,
            conn,
            correlation_id,
            message,
            publish.ack,
        ))
        .await;
    }
    if message.topic.starts_with(crate::operator::RESERVED_PREFIX)
        || crate::param::is_param_topic(&message.topic)
        || message.topic.starts_with("sys.presence.")
    {
        let msg = format!(
            "topic `{}` is written only by the bus (hosted operators, sys.control.param.set)",
            message.topic
        );
        shard.counters.permission_denied.inc();
        return refused(ErrorCode::PermissionDenied, &msg);
    }
    let (type_url, payload) = message
        .payload
        .as_ref()
        .map_or(("", &[][..]), |p| (p.type_url.as_str(), &p.value[..]));
    if let Some(manifest) = conn.manifest() {
        if let Err(why) = manifest.check_output(&message.topic, type_url, payload) {
            shard.counters.type_mismatches.inc();
            return refused(ErrorCode::TypeMismatch, &why);
        }
    }
    let circuits = &shard.shield.circuits;
    if let Err(why) = circuits.check_publish(&message.reality_id, &message.topic, type_url) {
        shard.counters.type_mismatches.inc();
        return refused(ErrorCode::TypeMismatch, &why);
    }
    let shielded = conn.shielded();
    if let Some(shielded) = &shielded {
        if let Err((code, why, pause)) = shield(shard, shielded, &message) {
            if publish.ack {
                reject(shard, conn, correlation_id, code, &why);
            } else {
                reject_unacked(shard, conn, correlation_id, code, &why);
            }
            // Over its publish rate, this connection is not read again until its tenant's
            // bucket has room: a flood costs the shard one refusal per refill, not one per
            // frame the client can write, and TCP flow control slows the client down.
            if let Some(pause) = pause {
                glommio::timer::sleep(pause).await;
            }
            return;
        }
    }
    let decision = {
        let mut policies = shard.policies.borrow_mut();
        let decision = policies.check(&message, frame_bytes, &shard.counters);
        if let Some(buckets) = shielded.as_ref().and_then(|s| s.lane.buckets.as_ref()) {
            buckets.charge_fuel(policies.last_fuel_used());
        }
        decision
    };
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
            reject(shard, conn, correlation_id, ErrorCode::PolicyFault, &msg);
            // A tenant whose pulses keep faulting is throttled (see `tenant::lanes`); the
            // reader then waits out the throttle before its next frame.
            if let Some(s) = &shielded {
                s.lane.note_fault(shard.clock.now_unix_nanos());
            }
            return;
        }
    }
    let mut retained_charge = 0;
    if let Some(shielded) = &shielded {
        match reserve_retained(shard, shielded, &message) {
            Ok(charged) => retained_charge = charged,
            Err(why) => {
                shard.counters.quota_exceeded.inc();
                shielded.lane.counters.quota_refusals.inc();
                return if publish.ack {
                    reject(shard, conn, correlation_id, ErrorCode::QuotaExceeded, &why)
                } else {
                    reject_unacked(shard, conn, correlation_id, ErrorCode::QuotaExceeded, &why)
                };
            }
        }
    }
    if let Some(s) = &shielded {
        s.lane.counters.published_pulses.inc();
        s.lane.counters.published_bytes.add(frame_bytes as u64);
    }
    let origin = Origin {
        shard: shard.id,
        conn: conn.id,
        correlation_id,
        ack: publish.ack,
        retained_charge,
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

/// Writes the session's authenticated identity into the envelope, over whatever the client put
/// there: the tenant and subject of its token or certificate, or `session-<id>` as the subject
/// of a session that brought neither. Policies, the audit log and subscribers read these;
/// `producer_id` stays what the client claims.
fn stamp_identity(conn: &Conn, message: &mut ArqonMessage) {
    message.tenant.clear();
    message.subject.clear();
    let Some(shielded) = conn.shielded() else {
        return;
    };
    let id = &shielded.identity;
    message.tenant.push_str(&id.tenant);
    if id.subject.is_empty() {
        if let Some(session) = conn.session.borrow().as_ref() {
            message.subject.push_str("session-");
            message.subject.push_str(&session.session_id);
        }
    } else {
        message.subject.push_str(&id.subject);
    }
}

/// Longest a connection over its publish rate is left unread.
const MAX_RATE_PAUSE: Duration = Duration::from_millis(100);
/// Shortest: the bucket refills one pulse in microseconds at a high rate, and a connection read
/// again that soon would cost the shard a decode and a refusal per pulse it can write; left
/// unread this long it costs at most 100 refusals a second.
const MIN_RATE_PAUSE: Duration = Duration::from_millis(10);

/// The shield's checks on one publish: grants, then the tenant's publish rate. A refusal
/// carries its code, the message for the client, and how long to leave the connection unread
/// (rate refusals only).
fn shield(
    shard: &Shard,
    shielded: &Shielded,
    message: &ArqonMessage,
) -> Result<(), (ErrorCode, String, Option<Duration>)> {
    let id = &shielded.identity;
    if let Err(why) = id.check_publish(&message.reality_id, &message.topic, shard.now_secs()) {
        shard.counters.permission_denied.inc();
        return Err((ErrorCode::PermissionDenied, why, None));
    }
    if let Some(buckets) = &shielded.lane.buckets {
        let bytes = message.encoded_len();
        if let Err((key, wait)) = buckets.try_take(bytes, shard.clock.now_unix_nanos()) {
            shard.counters.quota_exceeded.inc();
            shielded.lane.counters.quota_refusals.inc();
            let why = format!("tenant `{}` is publishing faster than {key}", id.tenant);
            return Err((
                ErrorCode::QuotaExceeded,
                why,
                Some(wait.clamp(MIN_RATE_PAUSE, MAX_RATE_PAUSE)),
            ));
        }
    }
    Ok(())
}

/// Counts a pulse for a retained reality against its tenant's `max_retained_bytes`; the bytes
/// charged (0 when the tenant has no such quota or the reality is ephemeral). The owner gives
/// them back when it refuses the pulse or retention deletes it.
fn reserve_retained(
    shard: &Shard,
    shielded: &Shielded,
    message: &ArqonMessage,
) -> Result<u64, String> {
    let Some(tenant) = &shielded.tenant else {
        return Ok(0);
    };
    if tenant.quota.max_retained_bytes == 0
        || shard.config.retention_for(&message.reality_id).is_none()
    {
        return Ok(0);
    }
    let bytes = message.encoded_len() as u64;
    tenant.reserve_retained(bytes).map_err(|over| over.0)?;
    Ok(bytes)
}
