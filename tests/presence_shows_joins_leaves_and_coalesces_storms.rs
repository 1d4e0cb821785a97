//! Presence over real sockets: a session with a subscription in a reality is listed (its client
//! name, identity, manifest and patterns) by `PresenceGet` (paged) and the CLI; joins, pattern
//! changes and leaves are announced on `sys.presence.changes` in the reality's sequence; a client
//! killed with SIGKILL leaves at once; a burst of 1,000 joins (and their leaves) is a handful of
//! coalesced pulses, not a thousand.

mod common;

use std::collections::HashSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use arqonbus::proto::v1::{OperatorManifest, PresenceChange};
use arqonbus_client::{Client, ConnectOptions, Subscription};
use common::{client_on_shard, raise_fd_limit, TestBus};
use futures::StreamExt;
use prost::Message;

const REALITY: &str = "lab-presence";

/// The next presence change on `watch`.
async fn change(watch: &mut Subscription, within: Duration) -> Option<PresenceChange> {
    let m = tokio::time::timeout(within, watch.next())
        .await
        .ok()??
        .ok()?;
    assert_eq!(m.topic, "sys.presence.changes");
    Some(PresenceChange::decode(m.payload?.value.as_slice()).unwrap())
}

/// Reads changes until `done` holds for what was gathered; returns how many pulses it took.
async fn until(
    watch: &mut Subscription,
    seen: &mut (HashSet<String>, HashSet<String>),
    done: impl Fn(&(HashSet<String>, HashSet<String>)) -> bool,
) -> usize {
    let mut pulses = 0;
    while !done(seen) {
        let c = change(watch, Duration::from_secs(10))
            .await
            .expect("a presence change in time");
        pulses += 1;
        seen.0.extend(c.present.into_iter().map(|e| e.session_id));
        seen.1.extend(c.left);
    }
    pulses
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_shows_joins_leaves_and_coalesces_storms() {
    raise_fd_limit();
    let bus = TestBus::start(|c| {
        c.shards = 2;
        c.limits.presence_coalesce_ms = 100;
        c.presence.announce = vec!["lab-*".into()];
    });
    let watcher = client_on_shard(bus.addr, 0).await;
    let mut watch = watcher.subscribe(REALITY, "sys.presence.>").await.unwrap();
    let me = change(&mut watch, Duration::from_secs(5)).await.unwrap();
    assert_eq!(me.present.len(), 1, "the watcher itself joined");
    let watcher_id = me.present[0].session_id.clone();

    // An operator on the other shard with two subscriptions: one entry, both patterns.
    let op = Client::connect(
        bus.addr,
        ConnectOptions {
            client_name: "bowlnet-7".into(),
            manifest: Some(OperatorManifest {
                name: "bowlnet".into(),
                capabilities: vec!["audio.features".into()],
                ..Default::default()
            }),
            ..ConnectOptions::default()
        },
    )
    .await
    .unwrap();
    let rig = op.subscribe(REALITY, "rig.>").await.unwrap();
    let _audio = op.subscribe(REALITY, "audio.>").await.unwrap();
    let mut latest = None;
    while let Some(c) = change(&mut watch, Duration::from_millis(500)).await {
        latest = c.present.into_iter().last();
    }
    let entry = latest.expect("the operator's join");
    assert_eq!(entry.client_name, "bowlnet-7");
    assert_eq!(entry.manifest_name, "bowlnet");
    assert_eq!(entry.capabilities, ["audio.features"]);
    assert_eq!(entry.patterns, ["audio.>", "rig.>"]);
    assert_eq!(entry.tenant, "anonymous");
    assert!(entry.connected_since_unix_nanos > 0);
    let listed = watcher.presence(REALITY).await.unwrap();
    assert_eq!(listed.len(), 2);
    assert!(listed.iter().any(|e| e.session_id == watcher_id));
    // Dropping one subscription changes the entry; the session stays present.
    rig.unsubscribe().await.unwrap();
    let c = change(&mut watch, Duration::from_secs(5)).await.unwrap();
    assert_eq!(c.present[0].patterns, ["audio.>"]);
    assert!(c.left.is_empty());

    // The CLI lists the same.
    let out = Command::new(env!("CARGO_BIN_EXE_arqonbus"))
        .args([
            "presence",
            "--server",
            &bus.addr.to_string(),
            "--reality",
            REALITY,
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // The CLI's own session subscribes nowhere: it is not present.
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines.iter().any(|l| l["manifest_name"] == "bowlnet"));

    // A subscriber killed with SIGKILL leaves.
    let mut child = Command::new(env!("CARGO_BIN_EXE_arqonbus"))
        .args([
            "sub",
            "--server",
            &bus.addr.to_string(),
            "--reality",
            REALITY,
            "--pattern",
            "x.>",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let joined = change(&mut watch, Duration::from_secs(10)).await.unwrap();
    let child_id = joined.present[0].session_id.clone();
    let killed = Instant::now();
    child.kill().unwrap();
    child.wait().unwrap();
    let left = change(&mut watch, Duration::from_secs(10)).await.unwrap();
    assert_eq!(left.left, [child_id]);
    println!("left {:?} after SIGKILL", killed.elapsed());
    assert!(killed.elapsed() < Duration::from_secs(2));

    // A storm: 1,000 sessions join at once, over both shards, then all leave.
    let mut storm = Vec::new();
    for _ in 0..1000 {
        storm.push(common::client(bus.addr));
    }
    let storm: Vec<Client> = futures::future::join_all(storm).await;
    let subs =
        futures::future::join_all(storm.iter().map(|c| c.subscribe(REALITY, "storm.>"))).await;
    let ids: HashSet<String> = HashSet::new();
    let mut seen = (ids, HashSet::new());
    let pulses = until(&mut watch, &mut seen, |s| s.0.len() >= 1000).await;
    println!("1000 joins announced in {pulses} pulses");
    assert!(pulses <= 50, "{pulses} presence pulses for 1000 joins");
    let listed = watcher.presence(REALITY).await.unwrap();
    assert_eq!(listed.len(), 1002, "paged: more than one page of 1000");
    drop(subs);
    for c in storm {
        drop(c);
    }
    let pulses = until(&mut watch, &mut seen, |s| s.1.len() >= 1000).await;
    println!("1000 leaves announced in {pulses} pulses");
    assert!(pulses <= 50, "{pulses} presence pulses for 1000 leaves");
    let listed = watcher.presence(REALITY).await.unwrap();
    assert_eq!(listed.len(), 2);
    bus.stop();
}
