//! `tenants.max_retained_bytes` bounds what a tenant's pulses hold on disk, not what it ever
//! wrote: when retention deletes a segment, the bytes its pulses were charged are given back,
//! and the tenant can publish again. A publish its owner refuses gives its bytes back too.

mod common;

use std::time::Duration;

use arqonbus::auth::Role;
use arqonbus::config::{SyncMode, TenantQuota};
use arqonbus::proto::v1::ErrorCode;
use arqonbus::time::ManualClock;
use arqonbus_client::Outgoing;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trimmed_pulses_give_their_tenant_its_retained_bytes_back() {
    let dir = tempfile::tempdir().unwrap();
    // Now, not a fixed date: the bus checks the token's expiry against this clock.
    let start = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let clock = ManualClock::new(start);
    let mut key = None;
    let bus = TestBus::start_with_clock(
        |c| {
            key = Some(token_key(c, true));
            retain(c, dir.path(), "lab-*", SyncMode::Always);
            c.limits.max_frame_bytes = 8 << 10;
            c.storage.segment_bytes = 16 << 10;
            c.storage.checkpoint_interval_ms = 20;
            c.retention[0].max_age_ms = 60_000;
            c.tenants.push(TenantQuota {
                name: "lab".into(),
                max_retained_bytes: 40_000,
                ..Default::default()
            });
        },
        clock.clone(),
    );
    let t = token(&key.unwrap(), "lab", &[Role::Publisher], &["*:>"], &[]);
    let c = client_with_token(bus.addr, &t).await.unwrap();
    let publish = || c.publish_acked(Outgoing::new("lab-quota", "a.b.c").bytes(vec![1u8; 3_000]));

    // Fill the quota: about thirteen pulses, over two or three 16 KiB segments.
    let mut stored = 0;
    loop {
        match publish().await {
            Ok(_) => stored += 1,
            Err(e) => {
                assert_eq!(e.code(), Some(ErrorCode::QuotaExceeded), "{e}");
                break;
            }
        }
        assert!(stored < 100, "the quota never filled");
    }
    assert!(stored >= 10, "only {stored} pulses before the quota");
    // Nothing has aged out yet: still full.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        publish().await.err().and_then(|e| e.code()),
        Some(ErrorCode::QuotaExceeded)
    );

    // Two minutes later every segment but the active one is past max_age_ms and is deleted; the
    // bytes its pulses held come back.
    clock.set(start + 120_000_000_000);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut again = 0;
    while std::time::Instant::now() < deadline && again == 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        while publish().await.is_ok() {
            again += 1;
        }
    }
    assert!(bus.metrics().segments_trimmed > 0, "nothing was trimmed");
    assert!(
        again >= 4,
        "after retention deleted old segments the tenant could publish only {again} more pulses"
    );
}
