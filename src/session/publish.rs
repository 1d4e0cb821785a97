//! `Publish` → sequenced by the reality's owner → `PubAck` when asked.

use std::rc::Rc;

use arqonbus_proto::v1::{ErrorCode, Publish};
use prost::Message;

use super::{reject, Conn};
use crate::routing::{validate_reality, validate_topic};
use crate::shard::{Origin, Shard, ToOwner};

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
    if let Err(e) = validate_reality(&message.reality_id) {
        let msg = format!("reality `{}` is invalid: {e}", message.reality_id);
        return reject(shard, conn, correlation_id, ErrorCode::InvalidReality, &msg);
    }
    if let Err(e) = validate_topic(&message.topic) {
        let msg = format!("topic `{}` is invalid: {e}", message.topic);
        return reject(shard, conn, correlation_id, ErrorCode::InvalidTopic, &msg);
    }
    if let Some(shielded) = conn.shielded() {
        let id = &shielded.identity;
        if let Err(why) = id.check_publish(&message.reality_id, &message.topic, shard.now_secs()) {
            shard.counters.permission_denied.inc();
            return reject(
                shard,
                conn,
                correlation_id,
                ErrorCode::PermissionDenied,
                &why,
            );
        }
        if let Some(buckets) = &shielded.buckets {
            let bytes = message.encoded_len();
            if let Err(key) = buckets.try_take(bytes, shard.clock.now_unix_nanos()) {
                shard.counters.quota_exceeded.inc();
                let msg = format!("tenant `{}` is publishing faster than {key}", id.tenant);
                return reject(shard, conn, correlation_id, ErrorCode::QuotaExceeded, &msg);
            }
        }
        if let Some(tenant) = &shielded.tenant {
            if tenant.quota.max_retained_bytes > 0
                && shard.config.retention_for(&message.reality_id).is_some()
            {
                if let Err(over) = tenant.reserve_retained(message.encoded_len() as u64) {
                    shard.counters.quota_exceeded.inc();
                    return reject(
                        shard,
                        conn,
                        correlation_id,
                        ErrorCode::QuotaExceeded,
                        &over.0,
                    );
                }
            }
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
