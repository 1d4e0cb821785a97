//! `Ping` → `Pong`.

use arqonbus_proto::frame::encode_frame;
use arqonbus_proto::v1::{server_frame, Ping, Pong, ServerFrame};

use super::Conn;
use crate::shard::Shard;

pub fn handle(shard: &Shard, conn: &Conn, correlation_id: u64, ping: Ping) {
    let pong = encode_frame(&ServerFrame {
        correlation_id,
        kind: Some(server_frame::Kind::Pong(Pong {
            nonce: ping.nonce,
            server_time_unix_nanos: shard.clock.now_unix_nanos(),
        })),
    });
    conn.push_frame(&shard.counters, pong);
}
