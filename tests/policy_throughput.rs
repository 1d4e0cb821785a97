//! End-to-end throughput of 1 KiB `nvm.job.submit` pulses with the energy_cap policy on and off,
//! in one run, on one bus: the policy is bound to reality `guarded-*` only, and both realities are
//! owned by the same shard, so the two modes differ in the policy alone. Rounds alternate.
//!
//! Ignored by default (it measures, it does not check much); run it in release:
//!
//! ```sh
//! cargo test --release -p arqonbus --test policy_throughput -- --ignored --nocapture
//! ```

mod common;

use std::time::{Duration, Instant};

use arqonbus::config::{BindingConfig, PolicyFile};
use arqonbus::routing::owner_shard;
use common::guest::guest_wasm;
use common::policy::nvm_job;
use common::{client_on_shard, TestBus};
use futures::StreamExt;

/// Pulses per round; `ARQONBUS_POLICY_PULSES` overrides it (a quick check in debug).
fn pulses() -> u64 {
    std::env::var("ARQONBUS_POLICY_PULSES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000)
}
const ROUNDS: usize = 3;
const PAYLOAD_BYTES: usize = 1024;

/// Two reality names owned by the same shard: one the policy binds, one it does not.
fn realities(shards: usize) -> (String, String) {
    let guarded = "guarded-1".to_owned();
    let owner = owner_shard(&guarded, shards);
    let open = (1..)
        .map(|i| format!("open-{i}"))
        .find(|r| owner_shard(r, shards) == owner)
        .unwrap();
    (open, guarded)
}

/// Publishes `pulses()` jobs (the last one acked) and waits until the subscriber has them all.
/// Returns (publish-to-ack, publish-to-last-delivery) rates in pulses per second.
async fn round(bus: &TestBus, reality: &str) -> (f64, f64) {
    let pulses = pulses();
    let subscriber = client_on_shard(bus.addr, 0).await;
    let mut sub = subscriber
        .subscribe(reality, "nvm.job.submit")
        .await
        .unwrap();
    let publisher = client_on_shard(bus.addr, 1).await;
    let job = nvm_job(reality, 49.0, PAYLOAD_BYTES);
    let started = Instant::now();
    for _ in 1..pulses {
        publisher.publish(job.clone()).await.unwrap();
    }
    publisher.publish_acked(job).await.unwrap();
    let acked = started.elapsed();
    let mut seen = 0u64;
    while seen < pulses {
        match tokio::time::timeout(Duration::from_secs(30), sub.next()).await {
            Ok(Some(Ok(_))) => seen += 1,
            Ok(Some(Err(arqonbus_client::ClientError::Dropped { count }))) => seen += count,
            other => panic!("delivery stopped after {seen}: {other:?}"),
        }
    }
    let delivered = started.elapsed();
    let _ = publisher.close().await;
    let _ = subscriber.close().await;
    let rate = |d: Duration| pulses as f64 / d.as_secs_f64();
    (rate(acked), rate(delivered))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement; run with --release -- --ignored --nocapture"]
async fn policy_throughput() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_owned();
    let wasm = guest_wasm("energy_cap");
    let bus = TestBus::start(move |c| {
        c.data_dir = data_dir;
        c.limits.max_outbound_bytes = 64 << 20;
        c.policies = vec![PolicyFile {
            name: "energy_cap".into(),
            wasm_path: wasm,
            bindings: vec![BindingConfig {
                reality_glob: "guarded-*".into(),
                topic_pattern: "nvm.job.submit".into(),
            }],
            order: 0,
            params: [("max_energy_joules".to_owned(), "50".to_owned())].into(),
            fuel_per_call: 0,
            max_memory_pages: 0,
            deadline_ms: 0,
        }];
    });
    let (open, guarded) = realities(2);
    let (mut off, mut on) = (Vec::new(), Vec::new());
    // Warm up both paths (instances are made on first use).
    round(&bus, &open).await;
    round(&bus, &guarded).await;
    let evaluations_before = bus.metrics().policy_evaluations;
    for _ in 0..ROUNDS {
        off.push(round(&bus, &open).await);
        on.push(round(&bus, &guarded).await);
    }
    let evaluations = bus.metrics().policy_evaluations - evaluations_before;
    assert_eq!(
        evaluations,
        pulses() * ROUNDS as u64,
        "the policy ran on every guarded pulse"
    );
    assert_eq!(bus.metrics().policy_denials, 0);

    let off_acked = median(off.iter().map(|r| r.0).collect());
    let off_delivered = median(off.iter().map(|r| r.1).collect());
    let on_acked = median(on.iter().map(|r| r.0).collect());
    let on_delivered = median(on.iter().map(|r| r.1).collect());
    println!();
    println!(
        "1 KiB nvm.job.submit, {} pulses x {ROUNDS} rounds, 2 shards, publisher on shard 1, \
         subscriber on shard 0; median of rounds",
        pulses()
    );
    println!("| policy | published+acked pulses/s | delivered pulses/s |");
    println!("| --- | ---: | ---: |");
    println!("| off | {off_acked:.0} | {off_delivered:.0} |");
    println!("| energy_cap on | {on_acked:.0} | {on_delivered:.0} |");
    println!(
        "| on/off | {:.3} | {:.3} |",
        on_acked / off_acked,
        on_delivered / off_delivered
    );
    println!("rounds off: {off:?}");
    println!("rounds on:  {on:?}");
}
