//! Spectral filters, run on the subscriber's shard once per pulse per filtered subscription:
//! the envelope walk (once per pulse, shared by the filters of every subscription), and the
//! evaluation of a few expressions over it.

use arqonbus::config::Limits;
use arqonbus::filter::{Filter, FilterLimits, LazyView, PulseView};
use arqonbus::proto::v1::{ArqonMessage, SpectralMetadata};
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use prost::Message;

/// A realistic pulse: a 1 KiB payload the walk must skip, trace context, eight eigenvalues.
fn envelope() -> Vec<u8> {
    ArqonMessage {
        id: "0190f3a2-7c1e-7000-8000-000000000001".into(),
        sequence: 123_456,
        topic: "lab.rig1.spectra".into(),
        producer_id: "omega-7".into(),
        reality_id: "lab-1".into(),
        trace_context: [(
            "traceparent".to_owned(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned(),
        )]
        .into(),
        spectral: Some(SpectralMetadata {
            coherence: 0.93,
            criticality: 0.04,
            eigenvalues: vec![2.5, 1.25, 0.75, 0.5, 0.25, 0.125, 0.0625, 0.03125],
        }),
        payload: Some(prost_types::Any {
            type_url: "type.googleapis.com/arqon.nvm.v1.NvmJob".into(),
            value: vec![7u8; 1024],
        }),
        timestamp_unix_nanos: 1_700_000_000_000_000_000,
        ..Default::default()
    }
    .encode_to_vec()
}

fn filters(c: &mut Criterion) {
    let bytes = envelope();
    let limits = FilterLimits::from_config(&Limits::default());
    let mut g = c.benchmark_group("filter");
    g.bench_function("scan envelope (1 KiB payload)", |b| {
        b.iter(|| PulseView::scan(black_box(&bytes)).is_some())
    });
    // The peer: what decoding the envelope with prost (the obvious alternative) costs.
    g.bench_function("peer: prost decode ArqonMessage", |b| {
        b.iter(|| ArqonMessage::decode(black_box(&bytes[..])).is_ok())
    });
    let view = PulseView::scan(&bytes).expect("valid envelope");
    for text in [
        "coherence >= 0.9 && criticality < 0.1",
        "eigenvalues[0] > 1.5",
        "len(eigenvalues) >= 3",
        "producer == \"omega-7\"",
        "!(coherence < 0.5 || criticality > 0.2) && eigenvalues[7] > 0 && topic != \"lab.rig1.noise\"",
    ] {
        let f = Filter::compile(text, &limits).expect("compiles");
        g.bench_function(format!("eval {text}"), |b| {
            b.iter(|| black_box(&f).matches(black_box(&view)))
        });
    }
    // What one filtered subscription costs per pulse on the shard: walk plus evaluation.
    let f = Filter::compile("coherence >= 0.9 && criticality < 0.1", &limits).expect("compiles");
    g.bench_function("scan + eval coherence >= 0.9 && criticality < 0.1", |b| {
        b.iter(|| black_box(&f).admits(&mut LazyView::new(black_box(&bytes))))
    });
    g.bench_function("compile coherence >= 0.9 && criticality < 0.1", |b| {
        b.iter(|| Filter::compile(black_box("coherence >= 0.9 && criticality < 0.1"), &limits))
    });
    g.finish();
}

criterion_group!(benches, filters);
criterion_main!(benches);
