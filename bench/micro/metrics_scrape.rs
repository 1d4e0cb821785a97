//! What observability costs: recording one delivery's latency on the data path (a shard's
//! single-writer histogram), summing shards at scrape time, and rendering the whole `/metrics`
//! page of a running two-shard server.

use arqonbus::config::Config;
use arqonbus::metrics::{LatencyHistogram, ShardCounters, Snapshot};
use arqonbus::Server;
use criterion::{black_box, criterion_group, criterion_main, Criterion};

fn observe(c: &mut Criterion) {
    let h = LatencyHistogram::default();
    let mut v = 1_000u64;
    c.bench_function("latency_observe", |b| {
        b.iter(|| {
            // Walk the buckets so the branch predictor cannot learn one answer.
            v = v
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            h.observe_nanos(black_box(v >> 34));
        })
    });
}

fn sum(c: &mut Criterion) {
    for shards in [2usize, 64] {
        let counters: Vec<ShardCounters> = (0..shards).map(|_| ShardCounters::default()).collect();
        c.bench_function(&format!("snapshot_sum_{shards}_shards"), |b| {
            b.iter(|| black_box(Snapshot::sum(counters.iter())))
        });
    }
}

fn render(c: &mut Criterion) {
    let server = Server::start(Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        admin_listen: None,
        shards: 2,
        ..Config::default()
    })
    .expect("server starts");
    let status = server.status();
    let mut out = String::with_capacity(16 << 10);
    c.bench_function("render_metrics_2_shards", |b| {
        b.iter(|| {
            out.clear();
            arqonbus::admin::exposition::render(&status, &mut out);
            black_box(out.len())
        })
    });
    server.stop().unwrap();
}

criterion_group!(benches, observe, sum, render);
criterion_main!(benches);
