//! `history.get` over a retained reality returns exactly the asked range — by sequence, by
//! time, with a limit and a pattern — in chunks bounded by the server; trimmed ranges and
//! ephemeral realities answer HISTORY_UNAVAILABLE.

mod common;

use arqonbus::config::SyncMode;
use arqonbus::proto::v1::history_get::{From, To};
use arqonbus::proto::v1::ErrorCode;
use arqonbus_client::{ClientError, Outgoing};
use common::{client, history_query, retain, TestBus};

const N: u64 = 3_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_returns_exactly_the_asked_range() {
    let dir = tempfile::tempdir().unwrap();
    let bus = TestBus::start(|c| {
        retain(c, dir.path(), "lab-*", SyncMode::Os);
        // Small chunks, so a range spans many of them.
        c.storage.history_chunk_bytes = 4096;
    });
    let c = client(bus.addr).await;
    let mut times = vec![0u64];
    for i in 1..=N {
        let topic = if i % 2 == 0 {
            "rig.even.tick"
        } else {
            "rig.odd.tick"
        };
        let out = Outgoing::new("lab-h", topic).bytes(vec![i as u8; 300]);
        if i % 100 == 0 {
            let ack = c.publish_acked(out).await.unwrap();
            assert_eq!(ack.sequence, i);
        } else {
            c.publish(out).await.unwrap();
        }
    }
    c.flush().await.unwrap();

    // By sequence, [from, to).
    let (got, end) = c
        .history(history_query(
            "lab-h",
            Some(From::FromSequence(100)),
            Some(To::ToSequence(1100)),
            0,
        ))
        .await
        .unwrap()
        .collect_all()
        .await
        .unwrap();
    let seqs: Vec<u64> = got.iter().map(|m| m.sequence).collect();
    assert_eq!(seqs, (100..1100).collect::<Vec<_>>());
    assert_eq!((end.count, end.next_sequence), (1000, 1100));
    for m in &got {
        times.push(m.timestamp_unix_nanos);
        assert_eq!(
            m.payload.as_ref().unwrap().value,
            vec![m.sequence as u8; 300]
        );
    }

    // By time: from the time of #200 (inclusive) to the time of #300 (exclusive).
    let t200 = got[100].timestamp_unix_nanos;
    let t300 = got[200].timestamp_unix_nanos;
    let (by_time, _) = c
        .history(history_query(
            "lab-h",
            Some(From::FromTimeUnixNanos(t200)),
            Some(To::ToTimeUnixNanos(t300)),
            0,
        ))
        .await
        .unwrap()
        .collect_all()
        .await
        .unwrap();
    assert!(by_time
        .iter()
        .all(|m| m.timestamp_unix_nanos >= t200 && m.timestamp_unix_nanos < t300));
    assert!(by_time.first().unwrap().sequence <= 200 && by_time.last().unwrap().sequence < 300);
    let expected: Vec<u64> = got
        .iter()
        .filter(|m| m.timestamp_unix_nanos >= t200 && m.timestamp_unix_nanos < t300)
        .map(|m| m.sequence)
        .collect();
    assert_eq!(
        by_time.iter().map(|m| m.sequence).collect::<Vec<_>>(),
        expected
    );

    // Limit and pattern.
    let mut q = history_query("lab-h", None, None, 7);
    q.pattern = "rig.even.*".into();
    let (limited, end) = c.history(q).await.unwrap().collect_all().await.unwrap();
    assert_eq!(
        limited.iter().map(|m| m.sequence).collect::<Vec<_>>(),
        vec![2, 4, 6, 8, 10, 12, 14]
    );
    assert_eq!(end.count, 7);

    // Everything, by default.
    let (all, _) = c
        .history(history_query("lab-h", None, None, 0))
        .await
        .unwrap()
        .collect_all()
        .await
        .unwrap();
    assert_eq!(all.len() as u64, N);

    // An ephemeral reality has no history.
    let err = c
        .history(history_query("ephemeral", None, None, 0))
        .await
        .unwrap()
        .collect_all()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::HistoryUnavailable), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trimmed_range_names_the_first_kept_sequence() {
    let dir = tempfile::tempdir().unwrap();
    let bus = TestBus::start(|c| {
        retain(c, dir.path(), "lab-*", SyncMode::Always);
        c.limits.max_frame_bytes = 8 << 10;
        c.storage.segment_bytes = 64 << 10;
        c.storage.checkpoint_interval_ms = 20;
        c.retention[0].max_bytes = 256 << 10;
    });
    let c = client(bus.addr).await;
    for _ in 0..2_000 {
        c.publish(Outgoing::new("lab-t", "a.b.c").bytes(vec![1u8; 500]))
            .await
            .unwrap();
    }
    let last = c
        .publish_acked(Outgoing::new("lab-t", "a.b.c").bytes("x"))
        .await
        .unwrap();
    // Retention runs with the checkpoint tick, as flushes make segments durable; wait until
    // the reality is back within its bound.
    let bound = (256 + 64) << 10;
    let mut settled = None;
    for _ in 0..100 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let r = c
            .history(history_query("lab-t", Some(From::FromSequence(1)), None, 1))
            .await
            .unwrap()
            .collect_all()
            .await;
        let first_kept = match r {
            Err(ClientError::Server {
                code: ErrorCode::HistoryUnavailable,
                first_available_sequence,
                ..
            }) => first_available_sequence,
            Ok(_) => continue,
            Err(e) => panic!("{e}"),
        };
        let (kept, _) = c
            .history(history_query(
                "lab-t",
                Some(From::FromSequence(first_kept)),
                None,
                0,
            ))
            .await
            .unwrap()
            .collect_all()
            .await
            .unwrap();
        assert_eq!(kept.first().unwrap().sequence, first_kept);
        assert_eq!(kept.last().unwrap().sequence, last.sequence);
        let bytes: usize = kept.iter().map(prost::Message::encoded_len).sum();
        if bytes <= bound {
            settled = Some(bytes);
            break;
        }
    }
    assert!(
        settled.is_some(),
        "retention never brought the reality within max_bytes"
    );
    assert!(bus.metrics().segments_trimmed > 0);
}
