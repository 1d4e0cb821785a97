//! Every retained reality costs a directory and a preallocated segment, so how many exist is
//! bounded: per shard (`limits.max_retained_realities_per_shard`, LIMIT_EXCEEDED) and per tenant
//! (`tenants.max_retained_realities`, QUOTA_EXCEEDED), both checked before any file is made.
//! A refused publish creates nothing; the realities that exist keep working, and so does
//! everyone else.

mod common;

use arqonbus::auth::Role;
use arqonbus::config::{SyncMode, TenantQuota};
use arqonbus::proto::v1::ErrorCode;
use arqonbus::routing::owner_shard;
use arqonbus_client::{Client, Outgoing};
use common::*;

/// The reality directories in the data directory.
fn reality_dirs(data_dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(data_dir.join("realities"))
        .map(|entries| {
            entries
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Publishes one acked pulse to each reality; the realities that took it, and the error codes
/// of the rest.
async fn publish_each(c: &Client, realities: &[String]) -> (Vec<String>, Vec<ErrorCode>) {
    let mut created = Vec::new();
    let mut refused = Vec::new();
    for reality in realities {
        match c.publish_acked(Outgoing::new(reality, "make.one.x")).await {
            Ok(_) => created.push(reality.clone()),
            Err(e) => refused.push(e.code().expect("an error frame")),
        }
    }
    (created, refused)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_creates_at_most_its_retained_realities() {
    let dir = tempfile::tempdir().unwrap();
    let bus = TestBus::start(|c| {
        retain(c, dir.path(), "kept-*", SyncMode::Os);
        c.limits.max_retained_realities_per_shard = 5;
        c.storage.segment_bytes = 2 << 20;
    });
    // Fifteen realities that all hash to shard 0.
    let on_zero: Vec<String> = (0..)
        .map(|i| format!("kept-{i}"))
        .filter(|r| owner_shard(r, 2) == 0)
        .take(15)
        .collect();
    let c = client(bus.addr).await;
    let (created, refused) = publish_each(&c, &on_zero).await;
    assert_eq!(created.len(), 5, "created {created:?}");
    assert_eq!(refused, vec![ErrorCode::LimitExceeded; 10]);
    assert_eq!(
        reality_dirs(dir.path()).len(),
        5,
        "a refused publish made files"
    );

    // What exists keeps working, ephemeral realities are not counted, and the other shard has
    // room of its own.
    let other = client(bus.addr).await;
    for reality in &created {
        other
            .publish_acked(Outgoing::new(reality, "still.works.x"))
            .await
            .unwrap();
    }
    other
        .publish_acked(Outgoing::new("ephemeral", "still.works.x"))
        .await
        .unwrap();
    let on_one = (0..)
        .map(|i| format!("kept-{i}"))
        .find(|r| owner_shard(r, 2) == 1)
        .unwrap();
    other
        .publish_acked(Outgoing::new(&on_one, "still.works.x"))
        .await
        .expect("shard 1 is not full");
    assert_eq!(reality_dirs(dir.path()).len(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_creates_at_most_its_retained_realities() {
    let dir = tempfile::tempdir().unwrap();
    let mut key = None;
    let bus = TestBus::start(|c| {
        key = Some(token_key(c, true));
        retain(c, dir.path(), "kept-*", SyncMode::Os);
        c.storage.segment_bytes = 2 << 20;
        c.tenants.push(TenantQuota {
            name: "small".into(),
            max_retained_realities: 4,
            ..Default::default()
        });
    });
    let key = key.unwrap();
    let small = token(&key, "small", &[Role::Publisher], &["*:>"], &[]);
    let big = token(&key, "big", &[Role::Publisher], &["*:>"], &[]);
    let c = client_with_token(bus.addr, &small).await.unwrap();
    // Spread over both shards: the quota spans them.
    let mine: Vec<String> = (0..14).map(|i| format!("kept-small-{i}")).collect();
    let (created, refused) = publish_each(&c, &mine).await;
    assert_eq!(created.len(), 4, "created {created:?}");
    assert_eq!(refused, vec![ErrorCode::QuotaExceeded; 10]);
    assert_eq!(
        reality_dirs(dir.path()).len(),
        4,
        "a refused publish made files"
    );

    for reality in &created {
        c.publish_acked(Outgoing::new(reality, "still.works.x"))
            .await
            .expect("the tenant's own realities keep working");
    }
    let other = client_with_token(bus.addr, &big).await.unwrap();
    let theirs: Vec<String> = (0..6).map(|i| format!("kept-big-{i}")).collect();
    let (created, refused) = publish_each(&other, &theirs).await;
    assert_eq!(
        created.len(),
        6,
        "another tenant is not limited: {refused:?}"
    );
    assert_eq!(reality_dirs(dir.path()).len(), 10);
}
