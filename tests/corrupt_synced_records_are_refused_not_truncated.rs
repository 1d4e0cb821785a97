//! Damage to records that were synced and acked is corruption wherever it lies, never a torn
//! tail to cut (which would reuse acked sequences): a flipped bit in the last acked record of a
//! bus killed long before its next checkpoint, a middle segment cut short, a zeroed segment
//! header. Each is refused at start-up naming the file and offset (`on_corruption = "refuse"`),
//! or quarantined with the rest of the bus serving (`"quarantine"`).

mod common;

use std::path::{Path, PathBuf};

use arqonbus::config::{Config, OnCorruption, SyncMode};
use arqonbus::proto::v1::ErrorCode;
use arqonbus::store::{reality_dir, RECORD_HEADER_BYTES, SEGMENT_HEADER_BYTES};
use arqonbus::{Server, ServerError};
use arqonbus_client::{Client, ConnectOptions, Outgoing};
use common::{client, retain, TestBus};

fn configure(c: &mut Config, dir: &Path, on: OnCorruption) {
    retain(c, dir, "lab-*", SyncMode::Always);
    c.limits.max_frame_bytes = 4096;
    c.storage.segment_bytes = 8192;
    c.storage.on_corruption = on;
}

/// Starts with `on_corruption = "refuse"` and returns the recovery error's reason.
fn refused(dir: &Path) -> String {
    let mut config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        admin_listen: Some("127.0.0.1:0".parse().unwrap()),
        shards: 2,
        ..Config::default()
    };
    configure(&mut config, dir, OnCorruption::Refuse);
    match Server::start(config) {
        Err(ServerError::Recovery { reason, .. }) => reason,
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("a corrupt reality was served"),
    }
}

/// Starts with `"quarantine"`: the damaged reality is refused, another one works.
async fn quarantined(dir: &Path) {
    let bus = TestBus::start(|c| configure(c, dir, OnCorruption::Quarantine));
    let c = client(bus.addr).await;
    let err = c
        .publish_acked(Outgoing::new("lab-c", "a.b.c").bytes("x"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::StorageFailed), "{err}");
    assert!(err.to_string().contains("quarantine"), "{err}");
    let ack = c
        .publish_acked(Outgoing::new("lab-ok", "a.b.c").bytes("y"))
        .await
        .unwrap();
    assert_eq!(ack.sequence, 1);
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut s: Vec<PathBuf> = std::fs::read_dir(reality_dir(dir, "lab-c"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    s.sort();
    s
}

/// The offsets of the records in a segment file.
fn record_offsets(seg: &Path) -> Vec<usize> {
    let bytes = std::fs::read(seg).unwrap();
    let mut pos = SEGMENT_HEADER_BYTES;
    let mut out = Vec::new();
    while pos + 4 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
        if len == 0 {
            break;
        }
        out.push(pos);
        pos += RECORD_HEADER_BYTES + len;
    }
    out
}

fn flip(path: &Path, offset: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[offset] ^= 0x10;
    std::fs::write(path, bytes).unwrap();
}

fn assert_names(reason: &str, path: &Path, offset: usize) {
    assert!(reason.contains(&path.display().to_string()), "{reason}");
    assert!(reason.contains(&format!("offset {offset}")), "{reason}");
}

/// 20 acked pulses, then kill -9: no checkpoint was ever written (the interval is an hour), so
/// only the durable position each group commit leaves says these records were acked.
async fn acked_then_killed(dir: &Path) -> PathBuf {
    let config = dir.join("arqonbus.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {dir:?}\n[storage]\ncheckpoint_interval_ms = 3600000\n[[retention]]\nrealities = \"lab-*\"\nsync = \"always\"\n"
        ),
    )
    .unwrap();
    let addr = format!("127.0.0.1:{}", common::free_port());
    let mut child = common::spawn_serve(&config, &addr);
    let c = Client::connect(addr.as_str(), ConnectOptions::default())
        .await
        .unwrap();
    for i in 0..20 {
        c.publish_acked(Outgoing::new("lab-c", "a.b.c").bytes(vec![i as u8; 60]))
            .await
            .unwrap();
    }
    // Leave the confirming sync (one fdatasync after the last ack) time to finish.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!reality_dir(dir, "lab-c").join("checkpoint").exists());
    segments(dir).pop().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flipped_bit_in_the_last_acked_record_after_the_checkpoint_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let seg = acked_then_killed(dir.path()).await;
    let offsets = record_offsets(&seg);
    assert_eq!(offsets.len(), 20);
    let last = offsets[19];
    flip(&seg, last + RECORD_HEADER_BYTES + 30);
    let reason = refused(dir.path());
    assert_names(&reason, &seg, last);
    quarantined(dir.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flipped_bit_with_acked_records_behind_it_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let seg = acked_then_killed(dir.path()).await;
    let at = record_offsets(&seg)[12];
    flip(&seg, at + 9);
    let reason = refused(dir.path());
    assert_names(&reason, &seg, at);
    quarantined(dir.path()).await;
}

/// Pulses over several 8 KiB segments, stopped cleanly.
async fn several_segments(dir: &Path) -> Vec<PathBuf> {
    let bus = TestBus::start(|c| configure(c, dir, OnCorruption::Refuse));
    let c = client(bus.addr).await;
    for i in 0..60 {
        c.publish_acked(Outgoing::new("lab-c", "a.b.c").bytes(vec![i as u8; 300]))
            .await
            .unwrap();
    }
    drop(c);
    bus.stop();
    let s = segments(dir);
    assert!(s.len() >= 3, "{s:?}");
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_middle_segment_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let segs = several_segments(dir.path()).await;
    let middle = &segs[1];
    let offsets = record_offsets(middle);
    // Cut in the middle of a record: it now runs past the file.
    let cut = offsets[offsets.len() / 2] + RECORD_HEADER_BYTES + 10;
    std::fs::OpenOptions::new()
        .write(true)
        .open(middle)
        .unwrap()
        .set_len(cut as u64)
        .unwrap();
    let reason = refused(dir.path());
    assert!(reason.contains(&middle.display().to_string()), "{reason}");
    assert!(reason.contains("offset"), "{reason}");
    quarantined(dir.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zeroed_segment_header_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let segs = several_segments(dir.path()).await;
    let mut bytes = std::fs::read(&segs[0]).unwrap();
    bytes[..SEGMENT_HEADER_BYTES].fill(0);
    std::fs::write(&segs[0], bytes).unwrap();
    let reason = refused(dir.path());
    assert_names(&reason, &segs[0], 0);
    assert!(reason.contains("zeroed"), "{reason}");
    quarantined(dir.path()).await;
}
