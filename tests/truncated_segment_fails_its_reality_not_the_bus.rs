//! A segment file truncated under the running bus: touching its map would raise SIGBUS and end
//! the process (this test runs the bus in-process, so the test would die with it). Instead the
//! reality answers STORAGE_FAILED naming the file, and every other reality, on the same shard
//! or not, keeps publishing and reading; the pulse refused that way does not come back after a
//! restart.

mod common;

use arqonbus::config::SyncMode;
use arqonbus::proto::v1::ErrorCode;
use arqonbus::store::reality_dir;
use arqonbus_client::Outgoing;
use common::{client, history_query, retain, TestBus};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_segment_fails_its_reality_not_the_bus() {
    let dir = tempfile::tempdir().unwrap();
    let bus = TestBus::start(|c| retain(c, dir.path(), "lab-*", SyncMode::Always));
    let c = client(bus.addr).await;
    let realities = ["lab-cut", "lab-kept-1", "lab-kept-2", "lab-kept-3"];
    for r in realities {
        for i in 0..50u8 {
            c.publish_acked(Outgoing::new(r, "a.b.c").bytes(vec![i; 500]))
                .await
                .unwrap();
        }
    }
    let seg = reality_dir(dir.path(), "lab-cut").join("00000000000000000001.seg");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(0)
        .unwrap();

    // A read touches the truncated map.
    let read = c
        .history(history_query("lab-cut", None, None, 0))
        .await
        .unwrap()
        .collect_all()
        .await;
    let err = read.expect_err("a truncated segment was read as if whole");
    assert_eq!(err.code(), Some(ErrorCode::StorageFailed), "{err}");
    assert!(
        err.to_string().contains(&seg.display().to_string()),
        "{err}"
    );
    // And so does a publish: refused, not acked into a map with no file behind it.
    let err = c
        .publish_acked(Outgoing::new("lab-cut", "a.b.c").bytes("lost?"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::StorageFailed), "{err}");

    for r in &realities[1..] {
        let ack = c
            .publish_acked(Outgoing::new(r, "a.b.c").bytes("still here"))
            .await
            .unwrap();
        assert_eq!(ack.sequence, 51);
        let (all, _) = c
            .history(history_query(r, None, None, 0))
            .await
            .unwrap()
            .collect_all()
            .await
            .unwrap();
        assert_eq!(all.len(), 51, "{r}");
    }
    drop(c);
    drop(bus);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_active_segment_fails_the_next_publish() {
    let dir = tempfile::tempdir().unwrap();
    let bus = TestBus::start(|c| retain(c, dir.path(), "lab-*", SyncMode::Always));
    let c = client(bus.addr).await;
    for i in 0..5u8 {
        c.publish_acked(Outgoing::new("lab-cut", "a.b.c").bytes(vec![i; 100]))
            .await
            .unwrap();
    }
    // Let the sync that follows the last ack finish, so the next publish is the one whose
    // flush finds the file shrunk.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let seg = reality_dir(dir.path(), "lab-cut").join("00000000000000000001.seg");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(4096)
        .unwrap();
    let err = c
        .publish_acked(Outgoing::new("lab-cut", "a.b.c").bytes("after the cut"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::StorageFailed), "{err}");
    assert!(
        err.to_string().contains("shrank") || err.to_string().contains("unreadable"),
        "{err}"
    );
    let ack = c
        .publish_acked(Outgoing::new("lab-other", "a.b.c").bytes("fine"))
        .await
        .unwrap();
    assert_eq!(ack.sequence, 1);
    drop(c);
    bus.stop();

    // The refused pulse was written into the part of the map the file still backs; it was
    // zeroed before the refusal went out, so a restart does not bring it back.
    let bus = TestBus::start(|c| retain(c, dir.path(), "lab-*", SyncMode::Always));
    let c = client(bus.addr).await;
    let (all, _) = c
        .history(history_query("lab-cut", None, None, 0))
        .await
        .unwrap()
        .collect_all()
        .await
        .unwrap();
    let payloads: Vec<Vec<u8>> = all.into_iter().map(|m| m.payload.unwrap().value).collect();
    assert_eq!(payloads, (0..5u8).map(|i| vec![i; 100]).collect::<Vec<_>>());
}
