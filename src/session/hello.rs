//! `Hello` → `Welcome`: the SAM handshake.

use std::rc::Rc;

use arqonbus_proto::frame::encode_frame;
use arqonbus_proto::v1::{server_frame, ErrorCode, Hello, ServerFrame, Welcome};
use arqonbus_proto::PROTOCOL_VERSION;
use bytes::Bytes;

use super::{error_frame, Conn, SessionInfo};
use crate::shard::{uuid_v7, Shard};

/// Accepts the session or returns the fatal error frame that ends it.
pub fn handle(
    shard: &Rc<Shard>,
    conn: &Rc<Conn>,
    correlation_id: u64,
    hello: Hello,
) -> Result<(), Bytes> {
    if hello.protocol_version != PROTOCOL_VERSION {
        return Err(error_frame(
            correlation_id,
            ErrorCode::UnsupportedVersion,
            &format!(
                "this server speaks protocol version {PROTOCOL_VERSION}; the client asked for {}",
                hello.protocol_version
            ),
        ));
    }
    let session_id = uuid_v7(shard.clock.now_unix_nanos());
    tracing::debug!(
        shard = shard.id,
        conn = conn.id,
        peer = ?conn.peer,
        client = %hello.client_name,
        operator = hello.manifest.as_ref().map(|m| m.name.as_str()).unwrap_or(""),
        "session started"
    );
    let welcome = encode_frame(&ServerFrame {
        correlation_id,
        kind: Some(server_frame::Kind::Welcome(Welcome {
            session_id: session_id.clone(),
            server_version: crate::VERSION.to_owned(),
            shard: shard.id as u32,
            protocol_version: PROTOCOL_VERSION,
            max_frame_bytes: shard.config.limits.max_frame_bytes,
        })),
    });
    *conn.session.borrow_mut() = Some(SessionInfo {
        session_id,
        client_name: hello.client_name,
        manifest: hello.manifest,
    });
    conn.push_frame(&shard.counters, welcome);
    Ok(())
}
