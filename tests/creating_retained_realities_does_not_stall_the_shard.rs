//! Making a retained reality's log (directory, preallocated segment) and rolling to a new
//! segment happen on the shard's blocking pool, not on its reactor: while clients create
//! realities on a slow disk, another client's round trips on the same shard go on, and the
//! created realities still number their pulses from 1 with no gap, acking each only once stored.
//!
//! The disk is made slow by the store's test seam (every segment creation sleeps), so the test
//! does not depend on how fast this machine's disk happens to be. One test per binary: the seam
//! is process-wide.

mod common;

use std::time::{Duration, Instant};

use arqonbus::config::SyncMode;
use arqonbus::routing::owner_shard;
use arqonbus_client::Outgoing;
use common::{client_on_shard, history_query, retain, TestBus};

/// How long each segment creation takes on the "slow disk".
const CREATE_DELAY: Duration = Duration::from_millis(300);
const CREATORS: usize = 4;
const REALITIES_PER_CREATOR: usize = 3;
const PULSES_PER_REALITY: u64 = 40;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creating_retained_realities_does_not_stall_the_shard() {
    arqonbus::store::testing::delay_segment_creation(CREATE_DELAY);
    let dir = tempfile::tempdir().unwrap();
    let bus = TestBus::start(|c| {
        retain(c, dir.path(), "kept-*", SyncMode::Always);
        c.limits.max_frame_bytes = 8 << 10;
        // Small segments: each reality rolls (on the slow disk) while it is written.
        c.storage.segment_bytes = 16 << 10;
    });
    // Everything here is owned by shard 0, and every client is connected to it.
    let on_zero = |prefix: &'static str| {
        (0..)
            .map(move |i| format!("{prefix}-{i}"))
            .filter(|r| owner_shard(r, 2) == 0)
    };
    let probe_reality = on_zero("probe").next().unwrap();
    let names: Vec<String> = on_zero("kept")
        .take(CREATORS * REALITIES_PER_CREATOR)
        .collect();
    let prober = client_on_shard(bus.addr, 0).await;
    let mut creators = Vec::new();
    for chunk in names.chunks(REALITIES_PER_CREATOR) {
        let c = client_on_shard(bus.addr, 0).await;
        let chunk = chunk.to_vec();
        creators.push(tokio::spawn(async move {
            for reality in &chunk {
                for n in 1..=PULSES_PER_REALITY {
                    let ack = c
                        .publish_acked(Outgoing::new(reality, "make.one.x").bytes(vec![7u8; 900]))
                        .await
                        .expect("stored");
                    assert_eq!(ack.sequence, n, "{reality}: sequences go 1, 2, 3...");
                }
            }
        }));
    }

    // Round trips of an ephemeral reality on the same shard while the creations are in flight.
    let started = Instant::now();
    let mut round_trips = 0u32;
    let mut slowest = Duration::ZERO;
    while creators.iter().any(|t| !t.is_finished()) {
        let sent = Instant::now();
        prober
            .publish_acked(Outgoing::new(&probe_reality, "probe.round.trip"))
            .await
            .unwrap();
        slowest = slowest.max(sent.elapsed());
        round_trips += 1;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let creating = started.elapsed();
    for t in creators {
        t.await.unwrap();
    }
    // Twelve realities, each created and rolled at least twice, on a disk that takes 300 ms per
    // segment: on the reactor, that is over ten seconds with the shard stopped, and every round
    // trip would wait for a creation. Off it, round trips take a few milliseconds.
    assert!(
        creating >= CREATE_DELAY * 4,
        "the creations took only {creating:?}: the slow disk seam is not in effect"
    );
    assert!(
        round_trips >= 50,
        "only {round_trips} round trips in {creating:?} while realities were created"
    );
    assert!(
        slowest < CREATE_DELAY,
        "a round trip took {slowest:?}: it waited for a segment to be created"
    );

    // Every created reality holds exactly its acked pulses, 1..=n, in order.
    let reader = client_on_shard(bus.addr, 1).await;
    for reality in &names {
        let (pulses, end) = reader
            .history(history_query(reality, None, None, 0))
            .await
            .unwrap()
            .collect_all()
            .await
            .unwrap();
        let sequences: Vec<u64> = pulses.iter().map(|m| m.sequence).collect();
        assert_eq!(
            sequences,
            (1..=PULSES_PER_REALITY).collect::<Vec<_>>(),
            "{reality}"
        );
        assert_eq!(end.next_sequence, PULSES_PER_REALITY + 1);
    }
    arqonbus::store::testing::delay_segment_creation(Duration::ZERO);
}
