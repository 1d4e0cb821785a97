//! Publishers on different shards publish into one reality at once; a subscriber sees one
//! gapless sequence from the subscription's start, timestamps never decrease, and each
//! publisher's pulses keep the order it sent them in.

mod common;

use std::collections::HashMap;

use arqonbus_client::Outgoing;
use common::{client_on_shard, TestBus};
use futures::StreamExt;

const PER_PUBLISHER: u64 = 2_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulses_keep_reality_order_across_shards() {
    let bus = TestBus::start(|_| {});
    let sub_client = client_on_shard(bus.addr, 0).await;
    let mut sub = sub_client.subscribe("lab-order", "seq.>").await.unwrap();
    let first = sub.next_sequence();

    let mut tasks = Vec::new();
    for shard in [0u32, 1] {
        let publisher = client_on_shard(bus.addr, shard).await;
        tasks.push(tokio::spawn(async move {
            for i in 0..PER_PUBLISHER {
                let out = Outgoing::new("lab-order", "seq.test.pub")
                    .producer(&format!("p{shard}"))
                    .bytes(i.to_be_bytes().to_vec());
                publisher.publish(out).await.unwrap();
            }
            publisher.flush().await.unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }

    let mut last_ts = 0;
    let mut per_producer: HashMap<String, u64> = HashMap::new();
    for expected_seq in first..first + 2 * PER_PUBLISHER {
        let m = tokio::time::timeout(std::time::Duration::from_secs(20), sub.next())
            .await
            .expect("pulse arrives")
            .unwrap()
            .unwrap();
        assert_eq!(m.sequence, expected_seq, "gapless, strictly increasing");
        assert!(
            m.timestamp_unix_nanos >= last_ts,
            "timestamps never decrease"
        );
        last_ts = m.timestamp_unix_nanos;
        let n = u64::from_be_bytes(m.payload.unwrap().value[..8].try_into().unwrap());
        let next = per_producer.entry(m.producer_id.clone()).or_insert(0);
        assert_eq!(n, *next, "producer {} order kept", m.producer_id);
        *next += 1;
        assert_eq!(m.causal["lab-order"], m.sequence);
    }
    assert_eq!(per_producer.len(), 2);
}
