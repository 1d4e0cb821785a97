//! The wire codec on the hot path: decoding a 1 KB publish, encoding the envelope once, and
//! writing a subscriber's Deliver header in front of the shared bytes.

use arqonbus::proto::frame::{encode_frame, put_deliver_header, take_frame};
use arqonbus::proto::v1::{client_frame, ArqonMessage, ClientFrame, Publish, SpectralMetadata};
use bytes::BytesMut;
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use prost::Message;

fn envelope() -> ArqonMessage {
    let mut m = ArqonMessage {
        id: "01934f4e-7a1b-7c3d-9e8f-0123456789ab".into(),
        sequence: 42,
        topic: "lab.rig1.temp".into(),
        producer_id: "sensor-7".into(),
        reality_id: "lab-1".into(),
        spectral: Some(SpectralMetadata {
            coherence: 0.9,
            criticality: 0.1,
            eigenvalues: vec![1.0, 0.5, 0.25],
        }),
        payload: Some(prost_types::Any {
            type_url: "application/octet-stream".into(),
            value: vec![7u8; 1024],
        }),
        timestamp_unix_nanos: 1_700_000_000_000_000_000,
        ..Default::default()
    };
    m.causal.insert("lab-1".into(), 42);
    m
}

fn codec(c: &mut Criterion) {
    let message = envelope();
    let publish = encode_frame(&ClientFrame {
        correlation_id: 9,
        kind: Some(client_frame::Kind::Publish(Publish {
            message: Some(message.clone()),
            ack: false,
        })),
    });
    let mut g = c.benchmark_group("codec");
    g.throughput(Throughput::Elements(1));
    g.bench_function("decode_publish_1k", |b| {
        b.iter(|| {
            let mut buf = BytesMut::from(&publish[..]);
            let body = take_frame(&mut buf, 1 << 20).unwrap().unwrap();
            black_box(ClientFrame::decode(body).unwrap())
        })
    });
    g.bench_function("encode_envelope_1k", |b| {
        b.iter(|| black_box(black_box(&message).encode_to_vec()))
    });
    let encoded = message.encode_to_vec();
    g.bench_function("deliver_header_plus_copy_1k", |b| {
        let mut out = BytesMut::with_capacity(64 << 10);
        b.iter(|| {
            out.clear();
            put_deliver_header(&mut out, black_box(17), encoded.len());
            out.extend_from_slice(&encoded);
            black_box(out.len())
        })
    });
    g.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
