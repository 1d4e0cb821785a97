//! `Ping` → `Pong`, and the server's keepalive `Ping` to an idle session.

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

/// Tells a session that sent nothing for half of `limits.idle_timeout_ms` that it must send
/// something: a `ServerFrame.ping` (correlation id 0), which clients answer with a `Pong`.
pub fn keepalive(shard: &Shard, conn: &Conn) {
    let ping = encode_frame(&ServerFrame {
        correlation_id: 0,
        kind: Some(server_frame::Kind::Ping(Ping {
            nonce: shard.clock.now_unix_nanos(),
        })),
    });
    shard.counters.keepalive_pings.inc();
    conn.push_frame(&shard.counters, ping);
}
