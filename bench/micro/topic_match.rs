//! Topic validation and pattern matching, run once per pulse per subscription.

use arqonbus::routing::{validate_topic, Pattern};
use criterion::{black_box, criterion_group, criterion_main, Criterion};

fn topics(c: &mut Criterion) {
    let topic = "lab.rig1.sensor.temp";
    let mut g = c.benchmark_group("topic");
    g.bench_function("validate", |b| b.iter(|| validate_topic(black_box(topic))));
    for pattern in [
        "lab.rig1.sensor.temp",
        "lab.*.sensor.temp",
        "lab.>",
        "lab.rig2.>",
    ] {
        let p = Pattern::parse(pattern).unwrap();
        g.bench_function(format!("match {pattern}"), |b| {
            b.iter(|| black_box(&p).matches(black_box(topic)))
        });
    }
    g.finish();
}

criterion_group!(benches, topics);
criterion_main!(benches);
