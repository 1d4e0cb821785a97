//! One publisher, subscribers on both shards with overlapping patterns: every matching
//! subscription gets every pulse, byte-identical, in order; non-matching ones get nothing.

mod common;

use std::time::Duration;

use arqonbus_client::{Outgoing, Subscription};
use common::{client_on_shard, TestBus};
use futures::StreamExt;

const N: u64 = 500;

async fn take(sub: &mut Subscription, n: u64) -> Vec<arqonbus::proto::v1::ArqonMessage> {
    let mut out = Vec::new();
    for _ in 0..n {
        let m = tokio::time::timeout(Duration::from_secs(20), sub.next())
            .await
            .expect("pulse arrives")
            .unwrap()
            .unwrap();
        out.push(m);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_reaches_subscribers_on_every_shard() {
    let bus = TestBus::start(|_| {});
    let a = client_on_shard(bus.addr, 0).await;
    let b = client_on_shard(bus.addr, 1).await;
    let mut a_all = a.subscribe("fan", ">").await.unwrap();
    let mut b_star = b.subscribe("fan", "sensor.*.temp").await.unwrap();
    let mut b_rest = b.subscribe("fan", "sensor.>").await.unwrap();
    let mut b_none = b.subscribe("fan", "other.>").await.unwrap();
    let mut b_other_reality = b.subscribe("fan-2", ">").await.unwrap();

    let publisher = client_on_shard(bus.addr, 1).await;
    for i in 0..N {
        let out = Outgoing::new("fan", "sensor.rig1.temp").bytes(i.to_string());
        publisher.publish(out).await.unwrap();
    }
    publisher.flush().await.unwrap();

    let from_a = take(&mut a_all, N).await;
    let from_b_star = take(&mut b_star, N).await;
    let from_b_rest = take(&mut b_rest, N).await;
    assert_eq!(from_a, from_b_star);
    assert_eq!(from_a, from_b_rest);
    for (i, m) in from_a.iter().enumerate() {
        assert_eq!(
            m.payload.as_ref().unwrap().value,
            i.to_string().into_bytes()
        );
        assert_eq!(m.sequence, a_all.next_sequence() + i as u64);
    }
    let nothing = tokio::time::timeout(Duration::from_millis(300), b_none.next()).await;
    assert!(nothing.is_err(), "non-matching pattern got {nothing:?}");
    let nothing = tokio::time::timeout(Duration::from_millis(100), b_other_reality.next()).await;
    assert!(nothing.is_err(), "other reality got {nothing:?}");
    assert!(bus.metrics().pulses_delivered >= 3 * N);
}
