//! One SPSC ring between two pinned executors: messages per second through glommio's shared
//! channel, the only path pulses take between shards.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use glommio::channels::shared_channel;
use glommio::{LocalExecutorBuilder, Placement};

fn transfer(messages: u64, capacity: usize) -> Duration {
    let (tx, rx) = shared_channel::new_bounded::<u64>(capacity);
    let consumer = LocalExecutorBuilder::new(Placement::Unbound)
        .spawn(move || async move {
            let rx = rx.connect().await;
            let mut sum = 0u64;
            while let Some(v) = rx.recv().await {
                sum = sum.wrapping_add(v);
            }
            sum
        })
        .unwrap();
    let producer = LocalExecutorBuilder::new(Placement::Unbound)
        .spawn(move || async move {
            let tx = tx.connect().await;
            let start = Instant::now();
            for i in 0..messages {
                tx.send(i).await.unwrap();
            }
            drop(tx);
            start.elapsed()
        })
        .unwrap();
    let elapsed = producer.join().unwrap();
    let sum = consumer.join().unwrap();
    assert_eq!(sum, messages.wrapping_sub(1).wrapping_mul(messages) / 2);
    elapsed
}

fn ring(c: &mut Criterion) {
    let mut g = c.benchmark_group("spsc_ring");
    g.sample_size(10);
    g.throughput(Throughput::Elements(1));
    g.bench_function("send_recv_u64_cap1024", |b| {
        // Timing starts after both ends are connected, so thread start-up is not counted.
        b.iter_custom(|iters| transfer(iters, 1024))
    });
    g.finish();
}

criterion_group!(benches, ring);
criterion_main!(benches);
