//! `HistoryGet` → `HistoryChunk`* → `HistoryEnd`, read by the reality's owner one chunk at a
//! time as the client drains them.

use std::rc::Rc;

use arqonbus_proto::v1::{ErrorCode, HistoryGet};

use super::{reject, Conn};
use crate::history::Cursor;
use crate::routing::{validate_reality, Pattern};
use crate::shard::{ReadOrigin, Shard};

pub async fn handle(shard: &Rc<Shard>, conn: &Rc<Conn>, correlation_id: u64, query: HistoryGet) {
    if let Err(e) = validate_reality(&query.reality_id) {
        let msg = format!("reality `{}` is invalid: {e}", query.reality_id);
        return reject(shard, conn, correlation_id, ErrorCode::InvalidReality, &msg);
    }
    let pattern_text = if query.pattern.is_empty() {
        ">"
    } else {
        &query.pattern
    };
    let pattern = match Pattern::parse(pattern_text) {
        Ok(p) => p,
        Err(e) => {
            let msg = format!("pattern `{pattern_text}` is invalid: {e}");
            return reject(shard, conn, correlation_id, ErrorCode::InvalidTopic, &msg);
        }
    };
    if let Some(shielded) = conn.shielded() {
        let now = shard.now_secs();
        let id = &shielded.identity;
        if let Err(why) = id.check_subscribe(&query.reality_id, &pattern, pattern_text, now) {
            shard.counters.permission_denied.inc();
            return reject(
                shard,
                conn,
                correlation_id,
                ErrorCode::PermissionDenied,
                &why,
            );
        }
    }
    let lane = shard.lanes().get(conn.lane_id());
    if !lane.start_history_read() {
        shard.counters.quota_exceeded.inc();
        lane.counters.quota_refusals.inc();
        let msg = format!(
            "tenant `{}` has {} history reads in flight on this shard \
             (tenants.max_history_reads_per_shard)",
            lane.name(),
            lane.max_history_reads()
        );
        return reject(shard, conn, correlation_id, ErrorCode::QuotaExceeded, &msg);
    }
    let cursor = Cursor::history(&query, correlation_id, pattern);
    let origin = ReadOrigin {
        shard: shard.id,
        conn: conn.id,
        lane: lane.id,
    };
    shard.send_read(cursor, origin).await;
}
