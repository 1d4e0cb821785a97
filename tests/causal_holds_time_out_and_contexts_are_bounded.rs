//! A causal subscriber whose pulse waits for a dependency that never arrives gets that pulse
//! dropped after `limits.causal_hold_ms` — told with `Dropped`, counted — and goes on receiving
//! everything else on the same connection; a full hold buffer drops its oldest pulse the same
//! way instead of closing the connection; a publish whose causal context has more entries than
//! `limits.max_causal_entries` is refused.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use arqonbus::proto::v1::{client_frame, server_frame, ErrorCode, Ping, ServerFrame};
use arqonbus_client::Outgoing;
use common::{client, RawConn, TestBus};

/// What a frame says, in a form easy to compare.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    Deliver(u64, String, u64),
    Dropped(u64, u64),
    Pong,
    Other(String),
}

fn seen(f: ServerFrame) -> Seen {
    match f.kind {
        Some(server_frame::Kind::Deliver(d)) => {
            let m = d.message.unwrap();
            Seen::Deliver(d.subscription_id, m.reality_id, m.sequence)
        }
        Some(server_frame::Kind::Dropped(d)) => Seen::Dropped(d.subscription_id, d.count),
        Some(server_frame::Kind::Pong(_)) => Seen::Pong,
        other => Seen::Other(format!("{other:?}")),
    }
}

/// Sends a Ping and returns every frame up to its Pong: the connection is open and everything
/// the server queued before the Pong has arrived.
fn until_pong(raw: &mut RawConn) -> Vec<Seen> {
    raw.send_kind(99, client_frame::Kind::Ping(Ping { nonce: 7 }));
    let mut got = Vec::new();
    loop {
        let f = raw.recv().expect("the connection stays open");
        match seen(f) {
            Seen::Pong => return got,
            other => got.push(other),
        }
    }
}

/// The next `n` frames, in the order the (sorted) list puts them: the server may queue a
/// `Dropped` report after pulses it released at the same moment.
fn next_n(raw: &mut RawConn, n: usize) -> Vec<Seen> {
    let mut got: Vec<Seen> = (0..n)
        .map(|_| seen(raw.recv().expect("the connection stays open")))
        .collect();
    got.sort_by_key(|s| format!("{s:?}"));
    got
}

fn causal_subscriber(addr: std::net::SocketAddr) -> RawConn {
    let mut raw = RawConn::connect(addr);
    raw.hello();
    raw.subscribe_causal(1, "ra");
    raw.subscribe_causal(2, "rb");
    raw
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pulse_whose_dependency_never_arrives_is_dropped_after_the_hold_and_others_flow() {
    const HOLD_MS: u64 = 300;
    let bus = TestBus::start(|c| c.limits.causal_hold_ms = HOLD_MS);
    let addr = bus.addr;
    let mut raw = tokio::task::spawn_blocking(move || causal_subscriber(addr))
        .await
        .unwrap();
    let p = client(addr).await;
    let q = client(addr).await;
    // rb #1 depends on ra #100, which will never be published; rb #2 waits behind it.
    let held_at = Instant::now();
    q.publish_acked(Outgoing::new("rb", "b.pulse.x").causal(HashMap::from([("ra".into(), 100)])))
        .await
        .unwrap();
    q.publish_acked(Outgoing::new("rb", "b.pulse.x"))
        .await
        .unwrap();
    // ra is not held by any of it.
    p.publish_acked(Outgoing::new("ra", "a.pulse.x"))
        .await
        .unwrap();
    let mut raw = tokio::task::spawn_blocking(move || {
        let first = seen(raw.recv().expect("ra #1"));
        assert_eq!(
            first,
            Seen::Deliver(1, "ra".into(), 1),
            "rb waits, ra does not"
        );
        raw
    })
    .await
    .unwrap();

    // After the hold: rb #1 is reported dropped, rb #2 (which only waited behind it) goes.
    let after = tokio::task::spawn_blocking(move || {
        let got = next_n(&mut raw, 2);
        (raw, got, held_at.elapsed())
    })
    .await
    .unwrap();
    let (mut raw, got, waited) = after;
    assert_eq!(
        got,
        vec![Seen::Deliver(2, "rb".into(), 2), Seen::Dropped(2, 1)],
        "rb #1 dropped, rb #2 delivered"
    );
    assert!(
        waited >= Duration::from_millis(HOLD_MS),
        "dropped after {waited:?}, before the hold of {HOLD_MS} ms"
    );
    assert_eq!(bus.metrics().causal_expired, 1);

    // The connection goes on: both realities keep flowing, nothing more is held.
    p.publish_acked(Outgoing::new("ra", "a.pulse.x"))
        .await
        .unwrap();
    q.publish_acked(Outgoing::new("rb", "b.pulse.x"))
        .await
        .unwrap();
    let later = tokio::task::spawn_blocking(move || next_n(&mut raw, 2))
        .await
        .unwrap();
    assert_eq!(
        later,
        vec![
            Seen::Deliver(1, "ra".into(), 2),
            Seen::Deliver(2, "rb".into(), 3)
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_hold_buffer_drops_its_oldest_pulse_and_keeps_the_connection() {
    let bus = TestBus::start(|c| {
        c.limits.max_causal_held = 3;
        c.limits.causal_hold_ms = 600_000;
    });
    let addr = bus.addr;
    let mut raw = tokio::task::spawn_blocking(move || causal_subscriber(addr))
        .await
        .unwrap();
    let p = client(addr).await;
    for _ in 0..4 {
        p.publish_acked(
            Outgoing::new("rb", "b.pulse.x").causal(HashMap::from([("ra".into(), 100)])),
        )
        .await
        .unwrap();
    }
    let (got, open) = tokio::task::spawn_blocking(move || {
        let got = next_n(&mut raw, 1);
        (got, until_pong(&mut raw))
    })
    .await
    .unwrap();
    assert_eq!(got, vec![Seen::Dropped(2, 1)], "rb #1 made room for rb #4");
    assert_eq!(open, vec![], "still open, the rest still held");
    assert_eq!(bus.metrics().causal_evicted, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_causal_context_over_the_bound_is_refused() {
    let bus = TestBus::start(|c| c.limits.max_causal_entries = 8);
    let p = client(bus.addr).await;
    let context = |n: u64| (0..n).map(|i| (format!("r{i}"), i + 1)).collect();
    p.publish_acked(Outgoing::new("rc", "c.pulse.x").causal(context(8)))
        .await
        .expect("8 entries are within the bound");
    let refused = p
        .publish_acked(Outgoing::new("rc", "c.pulse.x").causal(context(9)))
        .await
        .expect_err("9 entries are over it");
    assert_eq!(refused.code(), Some(ErrorCode::LimitExceeded), "{refused}");
    assert!(
        refused.to_string().contains("limits.max_causal_entries"),
        "{refused}"
    );
}
