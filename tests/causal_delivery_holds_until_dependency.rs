//! Causal subscriptions: a pulse that depends on a pulse of another reality the connection
//! subscribes to is held until that one has been delivered; non-causal subscribers are not
//! held; the client carries its causal context across realities by itself. (The bounds on the
//! hold are proved in `causal_holds_time_out_and_contexts_are_bounded.rs`.)

mod common;

use std::collections::HashMap;
use std::time::Duration;

use arqonbus::proto::v1::server_frame;
use arqonbus_client::Outgoing;
use common::{client, RawConn, TestBus};
use futures::StreamExt;

/// (subscription, reality, sequence) of the next Deliver.
fn next_delivery(raw: &mut RawConn) -> (u64, String, u64) {
    match raw.recv().and_then(|f| f.kind) {
        Some(server_frame::Kind::Deliver(d)) => {
            let m = d.message.unwrap();
            (d.subscription_id, m.reality_id, m.sequence)
        }
        other => panic!("expected Deliver, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn causal_delivery_holds_until_dependency() {
    let bus = TestBus::start(|_| {});
    let addr = bus.addr;
    let mut raw = tokio::task::spawn_blocking(move || {
        let mut raw = RawConn::connect(addr);
        raw.hello();
        raw.subscribe_causal(1, "ra");
        raw.subscribe_causal(2, "rb");
        raw
    })
    .await
    .unwrap();
    let plain = client(addr).await;
    let mut plain_b = plain.subscribe("rb", ">").await.unwrap();

    // Two producers, so the one in ra has not seen rb (its context would otherwise make ra's
    // pulses depend on rb #1 and, with the made-up dependency below, form a cycle).
    let p = client(addr).await;
    let q = client(addr).await;
    for _ in 0..2 {
        p.publish_acked(Outgoing::new("ra", "a.pulse.x"))
            .await
            .unwrap();
    }
    // b1 claims to depend on ra #4, which does not exist yet.
    let b1 = q
        .publish_acked(Outgoing::new("rb", "b.pulse.x").causal(HashMap::from([("ra".into(), 4)])))
        .await
        .unwrap();
    // A non-causal subscriber is not held.
    let m = tokio::time::timeout(Duration::from_secs(5), plain_b.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(m.sequence, b1.sequence);
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        p.publish_acked(Outgoing::new("ra", "a.pulse.x"))
            .await
            .unwrap();
    }
    let order = tokio::task::spawn_blocking(move || {
        (0..5).map(|_| next_delivery(&mut raw)).collect::<Vec<_>>()
    })
    .await
    .unwrap();
    assert_eq!(
        order,
        vec![
            (1, "ra".into(), 1),
            (1, "ra".into(), 2),
            (1, "ra".into(), 3),
            (1, "ra".into(), 4),
            (2, "rb".into(), 1),
        ],
        "rb #1 waits for ra #4"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_carries_causal_context_across_realities() {
    let bus = TestBus::start(|_| {});
    let a = client(bus.addr).await;
    let watcher = client(bus.addr).await;
    let mut in_b = watcher.subscribe("rb", ">").await.unwrap();
    let relay = client(bus.addr).await;
    let mut relay_a = relay.subscribe("ra", ">").await.unwrap();
    for _ in 0..3 {
        a.publish(Outgoing::new("ra", "a.pulse.x")).await.unwrap();
    }
    let mut last = 0;
    for _ in 0..3 {
        last = relay_a.next().await.unwrap().unwrap().sequence;
    }
    // The relay saw ra up to #3; what it publishes in rb says so without being told.
    relay
        .publish(Outgoing::new("rb", "b.pulse.x"))
        .await
        .unwrap();
    let m = in_b.next().await.unwrap().unwrap();
    assert_eq!(m.causal.get("ra"), Some(&last));
    assert_eq!(m.causal.get("rb"), Some(&m.sequence));
    assert_eq!(relay.causal_context().get("ra"), Some(&3));
}
