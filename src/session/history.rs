//! `HistoryGet`. Realities are ephemeral until retention lands, so every query is answered
//! HISTORY_UNAVAILABLE with the reason.

use arqonbus_proto::v1::{ErrorCode, HistoryGet};

use super::{reject, Conn};
use crate::routing::validate_reality;
use crate::shard::Shard;

pub fn handle(shard: &Shard, conn: &Conn, correlation_id: u64, query: HistoryGet) {
    if let Err(e) = validate_reality(&query.reality_id) {
        let msg = format!("reality `{}` is invalid: {e}", query.reality_id);
        return reject(shard, conn, correlation_id, ErrorCode::InvalidReality, &msg);
    }
    let msg = format!(
        "reality `{}` is not retained: this server keeps no history yet",
        query.reality_id
    );
    reject(
        shard,
        conn,
        correlation_id,
        ErrorCode::HistoryUnavailable,
        &msg,
    );
}
