//! A bad record before the durable checkpoint: with `on_corruption = "refuse"` the bus does not
//! start and names the file and offset; with `"quarantine"` it starts, moves the reality aside,
//! and refuses its traffic while other realities work.

mod common;

use arqonbus::config::{Config, OnCorruption, SyncMode};
use arqonbus::proto::v1::ErrorCode;
use arqonbus::store::{reality_dir, RECORD_HEADER_BYTES, SEGMENT_HEADER_BYTES};
use arqonbus::{Server, ServerError};
use arqonbus_client::Outgoing;
use common::{client, retain, TestBus};

fn configure(c: &mut Config, dir: &std::path::Path, on: OnCorruption) {
    retain(c, dir, "lab-*", SyncMode::Always);
    c.storage.on_corruption = on;
}

/// Writes 10 pulses and stops cleanly (so the checkpoint covers them); returns the segment.
async fn write_ten(dir: &std::path::Path) -> std::path::PathBuf {
    let bus = TestBus::start(|c| configure(c, dir, OnCorruption::Refuse));
    let c = client(bus.addr).await;
    for _ in 0..10 {
        c.publish_acked(Outgoing::new("lab-c", "a.b.c").bytes(vec![1u8; 50]))
            .await
            .unwrap();
    }
    drop(c);
    bus.stop();
    let seg = reality_dir(dir, "lab-c").join("00000000000000000001.seg");
    assert!(seg.exists());
    assert!(
        reality_dir(dir, "lab-c").join("checkpoint").exists(),
        "clean stop writes the checkpoint"
    );
    seg
}

/// Flips one byte inside the third record.
fn garble_third_record(seg: &std::path::Path) -> usize {
    let mut bytes = std::fs::read(seg).unwrap();
    // Walk two records to find the third one's start.
    let mut pos = SEGMENT_HEADER_BYTES;
    for _ in 0..2 {
        let len = u32::from_le_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
        pos += RECORD_HEADER_BYTES + len;
    }
    bytes[pos + RECORD_HEADER_BYTES + 5] ^= 0xff;
    std::fs::write(seg, bytes).unwrap();
    pos
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corruption_before_checkpoint_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let seg = write_ten(dir.path()).await;
    let offset = garble_third_record(&seg);
    let mut config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        shards: 2,
        ..Config::default()
    };
    configure(&mut config, dir.path(), OnCorruption::Refuse);
    match Server::start(config) {
        Err(ServerError::Recovery { reason, .. }) => {
            assert!(reason.contains(&seg.display().to_string()), "{reason}");
            assert!(reason.contains(&format!("offset {offset}")), "{reason}");
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("a corrupt reality was served"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quarantine_starts_without_the_corrupt_reality() {
    let dir = tempfile::tempdir().unwrap();
    let seg = write_ten(dir.path()).await;
    garble_third_record(&seg);
    let bus = TestBus::start(|c| configure(c, dir.path(), OnCorruption::Quarantine));
    let c = client(bus.addr).await;
    let err = c
        .publish_acked(Outgoing::new("lab-c", "a.b.c").bytes("x"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::StorageFailed));
    assert!(err.to_string().contains("quarantine"), "{err}");
    assert!(!reality_dir(dir.path(), "lab-c").exists(), "moved aside");
    let quarantined = std::fs::read_dir(dir.path().join("quarantine"))
        .unwrap()
        .count();
    assert_eq!(quarantined, 1);
    // Other retained realities work.
    let ack = c
        .publish_acked(Outgoing::new("lab-ok", "a.b.c").bytes("y"))
        .await
        .unwrap();
    assert_eq!(ack.sequence, 1);
}
