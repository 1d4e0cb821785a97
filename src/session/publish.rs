//! `Publish` → sequenced by the reality's owner → `PubAck` when asked.

use std::rc::Rc;

use std::time::Duration;

use arqonbus_proto::v1::{ArqonMessage, ErrorCode, Publish};
use prost::Message;

use super::{reject, reject_unacked, Conn, Shielded};
use crate::routing::{validate_reality, validate_topic};
use crate::shard::{traceparent, Origin, Shard, ToOwner};

pub async fn handle(shard: &Rc<Shard>, conn: &Rc<Conn>, correlation_id: u64, publish: Publish) {
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
    if let Some(shielded) = conn.shielded() {
        if let Err((code, why, pause)) = shield(shard, &shielded, &message) {
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

/// Longest a connection over its publish rate is left unread.
const MAX_RATE_PAUSE: Duration = Duration::from_millis(100);

/// The shield's checks on one publish: grants, then the tenant's publish rate, then its
/// retained bytes. A refusal carries its code, the message for the client, and how long to
/// leave the connection unread (rate refusals only).
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
    if let Some(buckets) = &shielded.buckets {
        let bytes = message.encoded_len();
        if let Err((key, wait)) = buckets.try_take(bytes, shard.clock.now_unix_nanos()) {
            shard.counters.quota_exceeded.inc();
            let why = format!("tenant `{}` is publishing faster than {key}", id.tenant);
            return Err((
                ErrorCode::QuotaExceeded,
                why,
                Some(wait.min(MAX_RATE_PAUSE)),
            ));
        }
    }
    if let Some(tenant) = &shielded.tenant {
        if tenant.quota.max_retained_bytes > 0
            && shard.config.retention_for(&message.reality_id).is_some()
        {
            if let Err(over) = tenant.reserve_retained(message.encoded_len() as u64) {
                shard.counters.quota_exceeded.inc();
                return Err((ErrorCode::QuotaExceeded, over.0, None));
            }
        }
    }
    Ok(())
}
