//! `Hello` → `Welcome`: the SAM handshake, and where the shield settles who the session is.
//!
//! The token in Hello is either a signed token (tenant, subject, roles, grants: `auth/`) or one
//! of the static `control.controller_tokens`. A controller session is one whose signed token
//! has role `controller` (or `admin`) — the primary mechanism — or whose token is a static
//! controller token, kept so existing deployments keep working; such a session belongs to
//! `auth.anonymous_tenant` as subject `controller`.

use std::rc::Rc;
use std::time::Duration;

use arqonbus_proto::frame::encode_frame;
use arqonbus_proto::v1::{server_frame, ErrorCode, Hello, ServerFrame, Welcome};
use arqonbus_proto::PROTOCOL_VERSION;
use bytes::Bytes;

use super::{error_frame, Conn, Role, SessionInfo, Shielded};
use crate::auth::{Identity, Revoked};
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
    let manifest = match hello.manifest.as_ref().map(crate::sam::Manifest::validate) {
        None => None,
        Some(Ok(m)) => Some(std::sync::Arc::new(m)),
        Some(Err(why)) => {
            return Err(error_frame(correlation_id, ErrorCode::InvalidRequest, &why));
        }
    };
    let static_controller =
        is_controller_token(&shard.config.control.controller_tokens, &hello.token);
    let shielded = settle_identity(shard, conn, &hello.token, static_controller)
        .map_err(|(code, why)| error_frame(correlation_id, code, &why))?;

    let role = if shielded.identity.has_role(crate::auth::Role::Controller) {
        Role::Controller
    } else {
        Role::Client
    };
    let session_id = uuid_v7(shard.clock.now_unix_nanos());
    tracing::debug!(
        shard = shard.id,
        conn = conn.id,
        peer = ?conn.peer,
        transport = ?conn.transport,
        tenant = %shielded.identity.tenant,
        subject = %shielded.identity.subject,
        client = %hello.client_name,
        operator = manifest.as_ref().map(|m| m.name.as_str()).unwrap_or(""),
        role = role.as_str(),
        "session started"
    );
    let expires = shielded.identity.expires_unix_secs;
    let allowed = manifest.as_ref().map_or(Ok(()), |m| {
        shielded
            .identity
            .check_capabilities(&m.capabilities)
            .map_err(|why| (ErrorCode::PermissionDenied, why))?;
        shard
            .shield
            .circuits
            .check_manifest(m)
            .map_err(|why| (ErrorCode::TypeMismatch, why))
    });
    // Set even when refused: the tenant's connection count is given back when it closes.
    conn.set_shielded(shielded);
    if let Err((code, why)) = allowed {
        if code == ErrorCode::PermissionDenied {
            shard.counters.permission_denied.inc();
        } else {
            shard.counters.type_mismatches.inc();
        }
        return Err(error_frame(correlation_id, code, &why));
    }
    if let Some(m) = &manifest {
        shard.shield.circuits.joined(m);
    }
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
        connected_since_unix_nanos: shard.clock.now_unix_nanos(),
        manifest,
        role,
    });
    conn.push_frame(&shard.counters, welcome);
    if let Some(exp) = expires {
        close_at_expiry(shard, conn, exp);
    }
    Ok(())
}

/// A session lives no longer than its token: at `exp` (Unix seconds) it is sent UNAUTHENTICATED
/// and closed, so its subscriptions stop delivering and it can send nothing more — control
/// pulses included. The client reconnects with a fresh token.
fn close_at_expiry(shard: &Rc<Shard>, conn: &Rc<Conn>, exp: u64) {
    let at_nanos = exp.saturating_mul(1_000_000_000);
    let wait = Duration::from_nanos(at_nanos.saturating_sub(shard.clock.now_unix_nanos()));
    let (weak_shard, weak_conn) = (Rc::downgrade(shard), Rc::downgrade(conn));
    let task = glommio::spawn_local(async move {
        let (shard, conn) = (weak_shard, weak_conn);
        glommio::timer::sleep(wait).await;
        let (Some(shard), Some(conn)) = (shard.upgrade(), conn.upgrade()) else {
            return;
        };
        shard.counters.sessions_expired.inc();
        tracing::info!(conn = conn.id, exp, "token expired; closing the session");
        let why = format!(
            "the session's token expired at {exp} (Unix seconds); reconnect with a new one"
        );
        conn.close_with(error_frame(0, ErrorCode::Unauthenticated, &why));
        conn.stop_reading();
    });
    *conn.expiry.borrow_mut() = Some(task);
}

/// Closes the session when the revocation list revokes its token, as expiry does: the client
/// is sent UNAUTHENTICATED with the reason, and nothing more is read. Called by the shard for
/// each of its sessions when the list was reloaded. True when it closed the session.
pub(crate) fn close_if_revoked(shard: &Shard, conn: &Conn, revoked: &Revoked) -> bool {
    let Some(shielded) = conn.shielded() else {
        // Still in its handshake: its Hello is checked against the new list.
        return false;
    };
    let Some(why) = revoked.revokes(&shielded.identity) else {
        return false;
    };
    if conn.is_closing() {
        return false;
    }
    shard.counters.sessions_revoked.inc();
    tracing::info!(
        conn = conn.id,
        tenant = %shielded.identity.tenant,
        subject = %shielded.identity.subject,
        "token revoked; closing the session"
    );
    let why = format!("{why}; the session is closed");
    conn.close_with(error_frame(0, ErrorCode::Unauthenticated, &why));
    conn.stop_reading();
    true
}

/// Authenticates the token (and client certificate) and takes a connection from the tenant's
/// quota. A failed authentication is counted against the peer's address.
fn settle_identity(
    shard: &Shard,
    conn: &Conn,
    token: &str,
    static_controller: bool,
) -> Result<Shielded, (ErrorCode, String)> {
    let shield = &shard.shield;
    let authenticated = if static_controller {
        Ok(Identity::static_controller(shield.auth.anonymous_tenant()))
    } else {
        shield
            .auth
            .authenticate(token, conn.cert.as_ref(), shard.now_secs())
            .and_then(|identity| match shard.revoked() {
                Some(revoked) => match revoked.revokes(&identity) {
                    Some(why) => Err(why),
                    None => Ok(identity),
                },
                None => Ok(identity),
            })
    };
    let identity = match authenticated {
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
    let lane = shard.lanes().for_tenant(&identity.tenant).clone();
    if let Some(left) = lane.throttled_for(shard.clock.now_unix_nanos()) {
        shard.counters.quota_exceeded.inc();
        lane.counters.quota_refusals.inc();
        let why = format!(
            "tenant `{}` is throttled on this shard for {} ms more: too many policy faults and \
             protocol errors (tenancy.max_faults_per_sec)",
            identity.tenant,
            left.as_millis().max(1)
        );
        return Err((ErrorCode::QuotaExceeded, why));
    }
    let tenant = shield
        .tenants
        .get(&identity.tenant)
        .filter(|t| t.is_bounded())
        .cloned();
    if let Some(t) = &tenant {
        if let Err(over) = t.reserve_connection() {
            shard.counters.quota_exceeded.inc();
            lane.counters.quota_refusals.inc();
            return Err((ErrorCode::QuotaExceeded, over.0));
        }
    }
    Ok(Shielded {
        identity,
        tenant,
        lane,
    })
}

/// Is `token` one of the controller tokens? Compares every byte of every candidate of the same
/// length, so the time taken does not say how much of a token was right.
fn is_controller_token(tokens: &[String], token: &str) -> bool {
    if token.is_empty() {
        return false;
    }
    let mut found = false;
    for candidate in tokens {
        if candidate.len() == token.len() {
            let diff = candidate
                .bytes()
                .zip(token.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b));
            found |= diff == 0;
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controller_tokens_match_exactly() {
        let tokens = vec![
            "0123456789abcdef".to_owned(),
            "another-long-token".to_owned(),
        ];
        assert!(is_controller_token(&tokens, "0123456789abcdef"));
        assert!(is_controller_token(&tokens, "another-long-token"));
        assert!(!is_controller_token(&tokens, "0123456789abcdeF"));
        assert!(!is_controller_token(&tokens, "0123456789abcde"));
        assert!(!is_controller_token(&tokens, ""));
        assert!(!is_controller_token(&[], "0123456789abcdef"));
    }
}
