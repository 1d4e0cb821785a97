//! `Hello` → `Welcome`: the SAM handshake, and where the shield settles who the session is.

use std::rc::Rc;

use arqonbus_proto::frame::encode_frame;
use arqonbus_proto::v1::{server_frame, ErrorCode, Hello, ServerFrame, Welcome};
use arqonbus_proto::PROTOCOL_VERSION;
use bytes::Bytes;

use super::{error_frame, Conn, SessionInfo, Shielded};
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
    let shielded = settle_identity(shard, conn, &hello.token)
        .map_err(|(code, why)| error_frame(correlation_id, code, &why))?;
    let session_id = uuid_v7(shard.clock.now_unix_nanos());
    tracing::debug!(
        shard = shard.id,
        conn = conn.id,
        peer = ?conn.peer,
        transport = ?conn.transport,
        tenant = %shielded.identity.tenant,
        subject = %shielded.identity.subject,
        client = %hello.client_name,
        operator = hello.manifest.as_ref().map(|m| m.name.as_str()).unwrap_or(""),
        "session started"
    );
    conn.set_shielded(shielded);
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

/// Authenticates the token (and client certificate) and takes a connection from the tenant's
/// quota. A failed authentication is counted against the peer's address.
fn settle_identity(
    shard: &Shard,
    conn: &Conn,
    token: &str,
) -> Result<Shielded, (ErrorCode, String)> {
    let shield = &shard.shield;
    let identity = match shield
        .auth
        .authenticate(token, conn.cert.as_ref(), shard.now_secs())
    {
        Ok(identity) => identity,
        Err(why) => {
            shard.counters.auth_failures.inc();
            if let Some(peer) = conn.peer {
                if shield.auth.guard.record_failure(peer.ip()) {
                    tracing::warn!(
                        peer = %peer.ip(),
                        "too many failed authentications; refusing this address for auth.block_ms"
                    );
                }
            }
            return Err((ErrorCode::Unauthenticated, why));
        }
    };
    let tenant = shield
        .tenants
        .get(&identity.tenant)
        .filter(|t| t.is_bounded())
        .cloned();
    if let Some(t) = &tenant {
        if let Err(over) = t.reserve_connection() {
            shard.counters.quota_exceeded.inc();
            return Err((ErrorCode::QuotaExceeded, over.0));
        }
    }
    let buckets = shard.tenant_buckets(&identity.tenant);
    Ok(Shielded {
        identity,
        tenant,
        buckets,
    })
}
