//! Retention by age deletes whole segments whose newest pulse is older than `max_age_ms`, as
//! the bus's clock sees it, and keeps the active segment.

mod common;

use std::time::Duration;

use arqonbus::config::SyncMode;
use arqonbus::proto::v1::history_get::From;
use arqonbus::time::ManualClock;
use arqonbus_client::{ClientError, Outgoing};
use common::{client, history_query, retain, TestBus};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_trims_by_age() {
    let dir = tempfile::tempdir().unwrap();
    let start = 1_800_000_000_000_000_000u64;
    let clock = ManualClock::new(start);
    let bus = TestBus::start_with_clock(
        |c| {
            retain(c, dir.path(), "lab-*", SyncMode::Always);
            c.limits.max_frame_bytes = 8 << 10;
            c.storage.segment_bytes = 32 << 10;
            c.storage.checkpoint_interval_ms = 20;
            c.retention[0].max_age_ms = 60_000;
        },
        clock.clone(),
    );
    let c = client(bus.addr).await;
    for _ in 0..300 {
        c.publish(Outgoing::new("lab-age", "old.pulse.x").bytes(vec![0u8; 400]))
            .await
            .unwrap();
    }
    c.publish_acked(Outgoing::new("lab-age", "old.pulse.x"))
        .await
        .unwrap();
    // Young enough: nothing goes.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(bus.metrics().segments_trimmed, 0);

    // Two minutes later, new pulses land in a fresh segment and the old ones expire.
    clock.set(start + 120_000_000_000);
    for _ in 0..100 {
        c.publish(Outgoing::new("lab-age", "new.pulse.x").bytes(vec![0u8; 400]))
            .await
            .unwrap();
    }
    let last = c
        .publish_acked(Outgoing::new("lab-age", "new.pulse.x"))
        .await
        .unwrap();
    let mut first_kept = None;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        match c
            .history(history_query(
                "lab-age",
                Some(From::FromSequence(1)),
                None,
                1,
            ))
            .await
            .unwrap()
            .collect_all()
            .await
        {
            Err(ClientError::Server {
                first_available_sequence,
                ..
            }) => {
                first_kept = Some(first_available_sequence);
                break;
            }
            Ok(_) => {}
            Err(e) => panic!("{e}"),
        }
    }
    let first_kept = first_kept.expect("old segments were trimmed");
    assert!(
        first_kept <= 302,
        "no new pulse was trimmed (first kept {first_kept})"
    );
    let (kept, _) = c
        .history(history_query(
            "lab-age",
            Some(From::FromSequence(first_kept)),
            None,
            0,
        ))
        .await
        .unwrap()
        .collect_all()
        .await
        .unwrap();
    assert_eq!(kept.last().unwrap().sequence, last.sequence);
    assert!(kept.iter().all(|m| m.sequence >= first_kept));
}
