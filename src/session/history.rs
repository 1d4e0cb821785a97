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
    let cursor = Cursor::history(&query, correlation_id, pattern);
    let origin = ReadOrigin {
        shard: shard.id,
        conn: conn.id,
    };
    shard.send_read(cursor, origin).await;
}
