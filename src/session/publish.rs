//! `Publish` → sequenced by the reality's owner → `PubAck` when asked.

use std::rc::Rc;

use arqonbus_proto::v1::{ErrorCode, Publish};

use super::{reject, Conn};
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
