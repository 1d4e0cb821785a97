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

/// Chunks and pulses of one whole read of `reality`, over a raw connection.
fn read_all(addr: std::net::SocketAddr, reality: &str) -> (u64, u64) {
    use arqonbus::proto::v1::{client_frame, server_frame};
    let mut raw = common::RawConn::connect(addr);
    raw.hello();
    let query = history_query(reality, None, None, 0);
    raw.send_kind(1, client_frame::Kind::HistoryGet(query));
    let (mut chunks, mut pulses) = (0, 0);
    loop {
        match raw.recv().expect("the read ends").kind {
            Some(server_frame::Kind::HistoryChunk(c)) => {
                chunks += 1;
                pulses += c.messages.len() as u64;
            }
            Some(server_frame::Kind::HistoryEnd(end)) => {
                assert_eq!(end.count, pulses);
                return (chunks, pulses);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// `storage.history_step_us`: a step ends when its time is up, so with a budget of 10 µs a read
/// comes in many more (smaller) chunks than its bytes need, and still brings the whole log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_history_step_ends_when_its_time_is_up() {
    const PULSES: u64 = 20_000;
    let mut chunks = Vec::new();
    for step_us in [1_000_000, 10] {
        let dir = tempfile::tempdir().unwrap();
        let bus = TestBus::start(|c| {
            retain(c, dir.path(), "timed-*", SyncMode::Os);
            c.storage.history_step_us = step_us;
        });
        let filler = client(bus.addr).await;
        for i in 1..=PULSES {
            let out = Outgoing::new("timed-1", "bulk.tick.x").bytes(vec![i as u8; PAYLOAD_BYTES]);
            if i == PULSES {
                filler.publish_acked(out).await.unwrap();
            } else {
                filler.publish(out).await.unwrap();
            }
        }
        let addr = bus.addr;
        let (n, pulses) = tokio::task::spawn_blocking(move || read_all(addr, "timed-1"))
            .await
            .unwrap();
        assert_eq!(pulses, PULSES, "step_us {step_us}: the whole log");
        chunks.push(n);
    }
    // 20,000 records of about 280 bytes fill 256 KiB chunks in about 22 steps.
    let (by_size, by_time) = (chunks[0], chunks[1]);
    assert!(
        by_size <= 40,
        "{by_size} chunks with all the time in the world"
    );
    assert!(
        by_time >= 3 * by_size,
        "{by_time} chunks with 10 µs steps, {by_size} without"
    );
}
