//! A subscription that starts in the past replays from the log and switches to live with no
//! gap and no duplicate, while publishers keep publishing — from a sequence, from a time, and
//! the last n — for subscribers on both shards.

mod common;

use std::time::Duration;

use arqonbus::config::SyncMode;
use arqonbus::proto::v1::{start_position::Position, StartPosition};
use arqonbus_client::{Client, Outgoing};
use common::{client, client_on_shard, retain, TestBus};
use futures::StreamExt;

const TOTAL: u64 = 6_000;

/// Publishes `from..=to`; the last one acked, so all are stored (and visible) on return.
async fn publish_range(c: Client, from: u64, to: u64) {
    for i in from..=to {
        let out = Outgoing::new("lab-r", "rig.a.tick").bytes(i.to_be_bytes().to_vec());
        if i == to {
            assert_eq!(c.publish_acked(out).await.unwrap().sequence, to);
        } else {
            c.publish(out).await.unwrap();
        }
    }
}

/// Subscribes from `start` and expects every sequence from the first one (which must lie in
/// `first`) to `last`, once each, in order.
async fn expect_sequences(
    c: &Client,
    start: Position,
    first: std::ops::RangeInclusive<u64>,
    last: u64,
) {
    let mut sub = c
        .subscribe_from(
            "lab-r",
            ">",
            Some(StartPosition {
                position: Some(start),
            }),
        )
        .await
        .unwrap();
    let from = sub.next_sequence();
    assert!(
        first.contains(&from),
        "replay starts at {from}, expected within {first:?}"
    );
    for expected in from..=last {
        let m = tokio::time::timeout(Duration::from_secs(30), sub.next())
            .await
            .unwrap_or_else(|_| panic!("stalled waiting for {expected}"))
            .unwrap()
            .unwrap();
        assert_eq!(m.sequence, expected, "no gap, no duplicate");
        let n = u64::from_be_bytes(m.payload.unwrap().value[..8].try_into().unwrap());
        assert_eq!(n, expected, "payload matches its sequence");
    }
    let extra = tokio::time::timeout(Duration::from_millis(200), sub.next()).await;
    assert!(extra.is_err(), "nothing after the last pulse: {extra:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_then_live_is_gapless_and_duplicate_free() {
    for sync in [SyncMode::Always, SyncMode::Os] {
        let dir = tempfile::tempdir().unwrap();
        let bus = TestBus::start(|c| {
            retain(c, dir.path(), "lab-*", sync);
            c.storage.history_chunk_bytes = 8192;
        });
        let publisher = client(bus.addr).await;
        publish_range(publisher.clone(), 1, TOTAL / 2).await;
        let t_mid = {
            let (h, _) = publisher
                .history(common::history_query(
                    "lab-r",
                    Some(arqonbus::proto::v1::history_get::From::FromSequence(1000)),
                    None,
                    1,
                ))
                .await
                .unwrap()
                .collect_all()
                .await
                .unwrap();
            h[0].timestamp_unix_nanos
        };

        // Subscribers on both shards start in the past while the second half is published.
        let live = tokio::spawn(publish_range(publisher.clone(), TOTAL / 2 + 1, TOTAL));
        let a = client_on_shard(bus.addr, 0).await;
        let b = client_on_shard(bus.addr, 1).await;
        let c = client_on_shard(bus.addr, 1).await;
        tokio::join!(
            expect_sequences(&a, Position::FromSequence(1), 1..=1, TOTAL),
            expect_sequences(&b, Position::FromTimeUnixNanos(t_mid), 1000..=1000, TOTAL),
            // The last 10 at the moment the owner resolves it, while publishing goes on.
            expect_sequences(&c, Position::LastN(10), TOTAL / 2 - 9..=TOTAL - 9, TOTAL),
        );
        live.await.unwrap();
    }
}
