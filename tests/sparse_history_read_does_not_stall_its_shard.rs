//! A history read whose pattern matches almost nothing of a long retained log is read in many
//! short steps (`storage.history_scan_records` / `history_scan_bytes`), with the owner shard's
//! reactor turning between them: another client's publish/ack round trips on the same shard
//! stay fast during the read, and the read still returns exactly what matches.

mod common;

use std::time::{Duration, Instant};

use arqonbus::config::SyncMode;
use arqonbus::routing::owner_shard;
use arqonbus_client::Outgoing;
use common::{client, client_on_shard, history_query, retain, TestBus};

/// Records in the log, and the bytes of each one's payload.
const RECORDS: u64 = 1_000_000;
const PAYLOAD_BYTES: usize = 100;
/// Every this many records, one the read's pattern matches.
const MATCH_EVERY: u64 = 250_000;
/// Reads sent at once: they follow each other on the owner.
const READS: usize = 4;
/// The slowest publish/ack round trip allowed during the reads: several times what it takes on a
/// loaded 2-core machine (a few ms). Before the bound, each read held the shard for its whole
/// scan of the log (about 110 ms here), and round trips took 100 ms and more.
const MAX_ACK: Duration = Duration::from_millis(50);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sparse_history_read_does_not_stall_its_shard() {
    let dir = tempfile::tempdir().unwrap();
    let bus = TestBus::start(|c| retain(c, dir.path(), "big-*", SyncMode::Os));
    let reality = "big-log";
    let owner = owner_shard(reality, 2) as u32;
    // An ephemeral reality the same shard owns, for the round trips.
    let ping_reality = (0..)
        .map(|i| format!("ping-{i}"))
        .find(|r| owner_shard(r, 2) as u32 == owner)
        .unwrap();

    let filler = client(bus.addr).await;
    let filled = Instant::now();
    for i in 1..=RECORDS {
        let topic = if i % MATCH_EVERY == 0 {
            "rare.event.x"
        } else {
            "bulk.tick.x"
        };
        let out = Outgoing::new(reality, topic).bytes(vec![(i % 251) as u8; PAYLOAD_BYTES]);
        if i == RECORDS {
            filler.publish_acked(out).await.unwrap();
        } else {
            filler.publish(out).await.unwrap();
        }
    }
    eprintln!("filled {RECORDS} records in {:?}", filled.elapsed());

    let reader = client_on_shard(bus.addr, owner).await;
    let pinger = client_on_shard(bus.addr, owner).await;
    // Warm up the round trip.
    pinger
        .publish_acked(Outgoing::new(&ping_reality, "ping.pong.x"))
        .await
        .unwrap();

    let reads = async {
        let started = Instant::now();
        let all = futures::future::join_all((0..READS).map(|_| async {
            let mut q = history_query(reality, None, None, 0);
            q.pattern = "rare.>".into();
            reader
                .history(q)
                .await
                .unwrap()
                .collect_all()
                .await
                .unwrap()
        }))
        .await;
        (all, started.elapsed())
    };
    let (reads_done_tx, mut reads_done) = tokio::sync::oneshot::channel::<()>();
    let pings = async {
        let mut worst = Duration::ZERO;
        let mut count = 0u32;
        loop {
            let sent = Instant::now();
            pinger
                .publish_acked(Outgoing::new(&ping_reality, "ping.pong.x"))
                .await
                .unwrap();
            worst = worst.max(sent.elapsed());
            count += 1;
            if reads_done.try_recv().is_ok() {
                return (worst, count);
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    };
    let reads = async {
        let r = reads.await;
        let _ = reads_done_tx.send(());
        r
    };
    let ((all, read_time), (worst, pings)) = tokio::join!(reads, pings);
    eprintln!("{READS} reads took {read_time:?}; {pings} round trips, slowest {worst:?}");

    for (got, end) in &all {
        let seqs: Vec<u64> = got.iter().map(|m| m.sequence).collect();
        let want: Vec<u64> = (1..=RECORDS).filter(|i| i % MATCH_EVERY == 0).collect();
        assert_eq!(seqs, want, "exactly the records the pattern matches");
        assert_eq!(end.count, want.len() as u64);
        assert_eq!(end.next_sequence, RECORDS + 1);
    }
    assert!(
        worst < MAX_ACK,
        "a publish/ack round trip took {worst:?} during the reads (bound {MAX_ACK:?})"
    );
}
