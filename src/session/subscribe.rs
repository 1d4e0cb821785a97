//! `Subscribe` → registered with the reality's owner → `Subscribed`; `Unsubscribe`.

use std::rc::Rc;
use std::sync::Arc;

use arqonbus_proto::v1::{ErrorCode, Subscribe, Unsubscribe};

use super::{reject, Conn};
use crate::filter::{Filter, FilterLimits};
use crate::history::Cursor;
use crate::routing::{validate_reality, Pattern};
use crate::shard::{LocalSub, ReadOrigin, Shard, SubscribeOrigin, ToOwner};

pub async fn subscribe(shard: &Rc<Shard>, conn: &Rc<Conn>, correlation_id: u64, s: Subscribe) {
    let fail = |code: ErrorCode, msg: &str| reject(shard, conn, correlation_id, code, msg);
    if s.subscription_id == 0 {
        return fail(
            ErrorCode::InvalidRequest,
            "subscription_id must be non-zero",
        );
    }
    if conn.has_subscription(s.subscription_id) {
        let msg = format!(
            "subscription id {} is already in use on this connection",
            s.subscription_id
        );
        return fail(ErrorCode::InvalidRequest, &msg);
    }
    let max = shard.config.limits.max_subscriptions_per_connection;
    if conn.subscription_count() as u64 >= max {
        let msg = format!(
            "connection already has {max} subscriptions (limits.max_subscriptions_per_connection)"
        );
        return fail(ErrorCode::LimitExceeded, &msg);
    }
    if let Err(e) = validate_reality(&s.reality_id) {
        let msg = format!("reality `{}` is invalid: {e}", s.reality_id);
        return fail(ErrorCode::InvalidReality, &msg);
    }
    let pattern = match Pattern::parse(&s.pattern) {
        Ok(p) => p,
        Err(e) => {
            let msg = format!("pattern `{}` is invalid: {e}", s.pattern);
            return fail(ErrorCode::InvalidTopic, &msg);
        }
    };
    // Compiled once here; evaluated per pulse on this shard (live) and the owner (replay).
    let filter = match Filter::optional(&s.filter, &FilterLimits::from_config(&shard.config.limits))
    {
        Ok(f) => f.map(Arc::new),
        Err(e) => {
            let msg = format!("filter is invalid {e}");
            return fail(ErrorCode::InvalidRequest, &msg);
        }
    };
    let shielded = conn.shielded();
    if let Some(shielded) = &shielded {
        let now = shard.now_secs();
        let id = &shielded.identity;
        if let Err(why) = id.check_subscribe(&s.reality_id, &pattern, &s.pattern, now) {
            shard.counters.permission_denied.inc();
            return fail(ErrorCode::PermissionDenied, &why);
        }
    }
    let replay = Cursor::replay(
        &s.reality_id,
        s.start.as_ref(),
        s.subscription_id,
        correlation_id,
        pattern.clone(),
    )
    .map(|mut cursor| {
        cursor.filter = filter.clone();
        cursor.inputs = conn.manifest().filter(|m| m.has_inputs());
        cursor
    });
    if s.causal && replay.is_some() {
        return fail(
            ErrorCode::InvalidRequest,
            "causal subscriptions start at `latest`",
        );
    }
    if let Some(tenant) = shielded.as_ref().and_then(|sh| sh.tenant.as_ref()) {
        if let Err(over) = tenant.reserve_subscription() {
            shard.counters.quota_exceeded.inc();
            return fail(ErrorCode::QuotaExceeded, &over.0);
        }
    }
    conn.remember_subscription(s.subscription_id, s.reality_id.clone(), s.pattern.clone());
    if let Some(update) = conn.presence_update(&s.reality_id) {
        shard.tell_presence(s.reality_id.clone(), update).await;
    }
    if let Some(cursor) = replay {
        // Replay first, from the owner's log, then switch to live where replay ended.
        let sub = Rc::new(
            LocalSub::replaying(conn.clone(), s.subscription_id, pattern)
                .with_filter(filter)
                .with_inputs(conn.manifest()),
        );
        shard.subs.borrow_mut().insert(&s.reality_id, sub);
        let origin = ReadOrigin {
            shard: shard.id,
            conn: conn.id,
            lane: conn.lane_id(),
        };
        return shard.send_read(cursor, origin).await;
    }
    if s.causal {
        conn.enable_causal(shard);
    }
    let sub = Rc::new(
        LocalSub::live(conn.clone(), s.subscription_id, pattern, s.causal)
            .with_filter(filter)
            .with_inputs(conn.manifest()),
    );
    shard.subs.borrow_mut().insert(&s.reality_id, sub);
    let origin = SubscribeOrigin {
        conn: conn.id,
        subscription_id: s.subscription_id,
        correlation_id,
    };
    let owner = shard.owner_of(&s.reality_id);
    if owner == shard.id {
        shard.change_interest(s.reality_id, shard.id, true, Some(origin));
    } else {
        let request = ToOwner::Interest {
            reality: s.reality_id,
            from_shard: shard.id,
            add: true,
            confirm: Some(origin),
        };
        shard.send_to_owner(owner, request).await;
    }
}

pub async fn unsubscribe(shard: &Rc<Shard>, conn: &Rc<Conn>, correlation_id: u64, u: Unsubscribe) {
    let Some(reality) = conn.forget_subscription(u.subscription_id) else {
        let msg = format!("no subscription {} on this connection", u.subscription_id);
        return reject(shard, conn, correlation_id, ErrorCode::InvalidRequest, &msg);
    };
    if let Some(update) = conn.presence_update(&reality) {
        shard.tell_presence(reality.clone(), update).await;
    }
    let removed = shard
        .subs
        .borrow_mut()
        .remove(&reality, conn.id, u.subscription_id);
    // A subscription still replaying was never counted by the owner.
    if removed.is_some_and(|s| s.interest_registered()) {
        release_interest(shard, reality).await;
    }
}

/// Tells the owner one subscription of this shard to `reality` is gone.
pub async fn release_interest(shard: &Rc<Shard>, reality: String) {
    let owner = shard.owner_of(&reality);
    if owner == shard.id {
        shard.change_interest(reality, shard.id, false, None);
    } else {
        let request = ToOwner::Interest {
            reality,
            from_shard: shard.id,
            add: false,
            confirm: None,
        };
        shard.send_to_owner(owner, request).await;
    }
}
