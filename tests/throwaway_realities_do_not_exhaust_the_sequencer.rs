//! `limits.max_realities_per_shard` bounds the realities a shard sequences at once, not over
//! its life: with a bound of 8, a client publishes to 1,000 throwaway ephemeral realities and
//! every publish is accepted (idle, unwatched realities are forgotten to make room), while a
//! reality with a live subscriber and a retained reality keep their sequences without a gap or
//! a repeat.

mod common;

use arqonbus::config::SyncMode;
use arqonbus_client::Outgoing;
use common::{client, retain, TestBus};
use futures::StreamExt;

const THROWAWAY: u64 = 1_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throwaway_realities_do_not_exhaust_the_sequencer() {
    let dir = tempfile::tempdir().unwrap();
    let bus = TestBus::start(|c| {
        c.limits.max_realities_per_shard = 8;
        retain(c, dir.path(), "kept-*", SyncMode::Os);
    });
    let watcher = client(bus.addr).await;
    let mut watched = watcher.subscribe("watched", ">").await.unwrap();
    let p = client(bus.addr).await;

    let mut watched_seq = 0;
    let mut kept_seq = 0;
    for i in 0..THROWAWAY {
        let ack = p
            .publish_acked(Outgoing::new(&format!("tmp-{i}"), "scratch.note.x"))
            .await
            .unwrap_or_else(|e| panic!("throwaway reality #{i} refused: {e}"));
        assert_eq!(ack.sequence, 1);
        if i % 100 == 0 {
            watched_seq += 1;
            let ack = p
                .publish_acked(Outgoing::new("watched", "live.tick.x"))
                .await
                .unwrap();
            assert_eq!(ack.sequence, watched_seq, "the watched reality goes on");
            kept_seq += 1;
            let ack = p
                .publish_acked(Outgoing::new("kept-log", "log.line.x"))
                .await
                .unwrap();
            assert_eq!(ack.sequence, kept_seq, "the retained reality goes on");
        }
    }
    for want in 1..=watched_seq {
        let m = watched.next().await.unwrap().unwrap();
        assert_eq!(
            m.sequence, want,
            "the subscriber sees no gap and no restart"
        );
    }
    assert!(
        bus.metrics().realities_evicted >= THROWAWAY - 16,
        "evicted {}",
        bus.metrics().realities_evicted
    );
}
