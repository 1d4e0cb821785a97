//! A retained reality on a full disk: the publish that cannot be stored gets STORAGE_FAILED,
//! nothing unstored is acknowledged, everything acknowledged is readable, and the bus keeps
//! serving other realities.

mod common;

use arqonbus::config::SyncMode;
use arqonbus::proto::v1::ErrorCode;
use arqonbus_client::Outgoing;
use common::{client, history_query, retain, TestBus};
use futures::StreamExt;

/// A 1 MiB tmpfs, unmounted on drop.
struct SmallDisk(tempfile::TempDir);

impl SmallDisk {
    fn mount() -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
            .arg(dir.path())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        ok.then_some(Self(dir))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.0.path())
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_fails_the_publish_not_the_bus() {
    let Some(disk) = SmallDisk::mount() else {
        // SAFETY: geteuid has no preconditions.
        assert_ne!(
            unsafe { libc::geteuid() },
            0,
            "root could not mount a tmpfs"
        );
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    };
    let bus = TestBus::start(|c| {
        retain(c, disk.0.path(), "lab-*", SyncMode::Always);
        c.limits.max_frame_bytes = 16 << 10;
        c.storage.segment_bytes = 256 << 10;
    });
    let c = client(bus.addr).await;
    let mut acked = Vec::new();
    let failure = loop {
        match c
            .publish_acked(Outgoing::new("lab-full", "fill.the.disk").bytes(vec![9u8; 8 << 10]))
            .await
        {
            Ok(ack) => acked.push(ack.sequence),
            Err(e) => break e,
        }
        assert!(acked.len() < 1_000, "a 1 MiB disk never filled");
    };
    assert_eq!(failure.code(), Some(ErrorCode::StorageFailed), "{failure}");
    assert!(failure.to_string().contains("disk full"), "{failure}");
    // Still full for a pulse that needs a new segment: refused again, not acknowledged.
    let again = c
        .publish_acked(Outgoing::new("lab-full", "fill.the.disk").bytes(vec![9u8; 8 << 10]))
        .await;
    assert_eq!(again.unwrap_err().code(), Some(ErrorCode::StorageFailed));

    // Everything acknowledged is there, in order.
    let (stored, _) = c
        .history(history_query("lab-full", None, None, 0))
        .await
        .unwrap()
        .collect_all()
        .await
        .unwrap();
    let seqs: Vec<u64> = stored.iter().map(|m| m.sequence).collect();
    assert_eq!(seqs, acked);

    // Other realities keep working.
    let mut sub = c.subscribe("elsewhere", ">").await.unwrap();
    c.publish(Outgoing::new("elsewhere", "still.alive.yes").bytes("ok"))
        .await
        .unwrap();
    let m = sub.next().await.unwrap().unwrap();
    assert_eq!(m.payload.unwrap().value, b"ok");
    drop(bus);
}
