//! What creating retained realities costs everyone else on the shard.
//!
//! ```sh
//! cargo run --release --example retained_creation_stall -- [seconds-per-phase] [segment-bytes] [realities]
//! ```
//!
//! An in-process server (2 shards) retains `kept-*`. A prober connected to shard 0 publishes an
//! acked pulse to an ephemeral reality that shard 0 owns, once per millisecond on an open-loop
//! schedule (latency from the *intended* send time, so stalls are not hidden), and we report its
//! round-trip p50/p99/max: alone, then while a second client on shard 0 publishes to new
//! retained realities owned by shard 0 as fast as it can (each one a directory and a
//! preallocated segment of `segment-bytes`, default 8 MiB), up to `realities` of them (default
//! 500). The data directory is a temporary directory on the volume of `TMPDIR`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arqonbus::config::{Config, RetentionRule, SyncMode};
use arqonbus::routing::owner_shard;
use arqonbus::Server;
use arqonbus_client::{Client, ConnectOptions, Outgoing};
use hdrhistogram::Histogram;

const PROBE_INTERVAL: Duration = Duration::from_millis(1);

async fn client_on_shard(addr: std::net::SocketAddr, shard: u32) -> Client {
    for _ in 0..500 {
        let c = Client::connect(addr, ConnectOptions::default())
            .await
            .expect("connect");
        if c.welcome().shard == shard {
            return c;
        }
        let _ = c.close().await;
    }
    panic!("no connection landed on shard {shard}");
}

/// Acked round trips on the schedule until `stop`; latency from each intended send time.
async fn probe(c: &Client, reality: &str, stop: &AtomicBool) -> Histogram<u64> {
    let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
    let start = Instant::now();
    let mut n = 0u32;
    while !stop.load(Ordering::Relaxed) {
        let intended = start + PROBE_INTERVAL * n;
        let now = Instant::now();
        if intended > now {
            tokio::time::sleep(intended - now).await;
        }
        c.publish_acked(Outgoing::new(reality, "probe.round.trip"))
            .await
            .expect("probe ack");
        let micros = intended.elapsed().as_micros() as u64;
        h.record(micros.clamp(1, 60_000_000)).unwrap();
        n += 1;
    }
    h
}

fn report(what: &str, h: &Histogram<u64>) {
    println!(
        "{what:<34} n={:>6}  p50={:>7} us  p99={:>8} us  max={:>8} us",
        h.len(),
        h.value_at_quantile(0.5),
        h.value_at_quantile(0.99),
        h.max()
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let secs: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(5);
    let segment_bytes: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(8 << 20);
    let most: usize = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(500);
    let phase = Duration::from_secs(secs);

    let dir = tempfile::tempdir().unwrap();
    let mut config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        admin_listen: None,
        shards: 2,
        data_dir: dir.path().to_owned(),
        ..Config::default()
    };
    config.storage.segment_bytes = segment_bytes;
    config.limits.max_retained_realities_per_shard = most as u64 + 10;
    config.retention.push(RetentionRule {
        realities: "kept-*".into(),
        max_age_ms: 0,
        max_bytes: 0,
        sync: SyncMode::Always,
        sync_interval_ms: 100,
        segment_bytes: None,
    });
    let server = Server::start(config).expect("server starts");
    let addr = server.local_addr();

    let probe_reality = (0..)
        .map(|i| format!("probe-{i}"))
        .find(|r| owner_shard(r, 2) == 0)
        .unwrap();
    let prober = client_on_shard(addr, 0).await;
    let creator = client_on_shard(addr, 0).await;

    let stop = AtomicBool::new(false);
    let alone = {
        let timer = async {
            tokio::time::sleep(phase).await;
            stop.store(true, Ordering::Relaxed);
        };
        let (h, ()) = tokio::join!(probe(&prober, &probe_reality, &stop), timer);
        h
    };
    report("prober alone", &alone);

    let stop = Arc::new(AtomicBool::new(false));
    let created = Arc::new(AtomicU64::new(0));
    let names: Vec<String> = (0..)
        .map(|i| format!("kept-{i}"))
        .filter(|r| owner_shard(r, 2) == 0)
        .take(most)
        .collect();
    let creating = {
        let (stop, created) = (stop.clone(), created.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            for name in &names {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                creator
                    .publish_acked(Outgoing::new(name, "create.one.x"))
                    .await
                    .expect("created");
                created.fetch_add(1, Ordering::Relaxed);
            }
            started.elapsed()
        })
    };
    let contended = {
        let ending = stop.clone();
        let timer = async move {
            tokio::time::sleep(phase).await;
            ending.store(true, Ordering::Relaxed);
        };
        let (h, ()) = tokio::join!(probe(&prober, &probe_reality, &stop), timer);
        h
    };
    let took = creating.await.unwrap();
    report("prober while realities are created", &contended);
    let n = created.load(Ordering::Relaxed);
    println!(
        "created {n} retained realities on shard 0 in {:.2} s ({:.0}/s), segment_bytes {segment_bytes}",
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64().max(1e-9)
    );
    server.stop().expect("clean stop");
}
