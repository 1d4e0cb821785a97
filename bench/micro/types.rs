//! What typed operators cost per pulse: the SAM output check on the publisher's shard (relaxed:
//! the type URL; strict: the 1 KiB `arqon.bench.Reading` of the harness's `types` scenario
//! decoded against its descriptor set), the input check on the subscriber's (over the lazy
//! envelope walk), the circuit edge check, and the delta codec of a 1 KiB state changing 1%.

use arqonbus::circuit::{self, CircuitFile, Circuits};
use arqonbus::delta::codec;
use arqonbus::filter::LazyView;
use arqonbus::proto::v1::{ArqonMessage, OperatorManifest, SchemaRef};
use arqonbus::sam::Manifest;
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use prost::Message;

// The payload and descriptor set of `arqonbus-bench types`, so both measure the same message.
#[allow(dead_code)]
#[path = "../src/reading.rs"]
mod reading;

const HYBRID: &str = include_str!("../../examples/circuits/hybrid.toml");

fn manifest() -> Manifest {
    let schema = |p: &str, t: &str| SchemaRef {
        topic_pattern: p.into(),
        type_url: t.into(),
    };
    Manifest::validate(&OperatorManifest {
        name: "bowlnet".into(),
        version: "1".into(),
        capabilities: vec!["audio.features".into()],
        input_schemas: vec![
            schema("audio.raw.>", "type.googleapis.com/arqon.demo.Audio"),
            schema("audio.meta.*", "type.googleapis.com/arqon.demo.Meta"),
        ],
        output_schemas: vec![
            schema(
                "audio.bowl.modes",
                "type.googleapis.com/arqon.demo.BowlModes",
            ),
            schema("audio.bowl.debug", "type.googleapis.com/arqon.demo.Debug"),
        ],
        ..Default::default()
    })
    .unwrap()
}

/// The manifest of the `types` scenario's operator: output `bench.types.>` carries
/// `arqon.bench.Reading`; strict with the descriptor set, relaxed without.
fn reading_manifest(strict: bool) -> Manifest {
    Manifest::validate(&OperatorManifest {
        name: "bench-types".into(),
        version: "1".into(),
        output_schemas: vec![SchemaRef {
            topic_pattern: "bench.types.>".into(),
            type_url: reading::TYPE_URL.into(),
        }],
        descriptor_set: if strict {
            reading::descriptor_set().into()
        } else {
            Default::default()
        },
        ..Default::default()
    })
    .unwrap()
}

fn types(c: &mut Criterion) {
    let m = manifest();
    c.bench_function("sam: output check, covered topic", |b| {
        b.iter(|| {
            m.check_output(
                black_box("audio.bowl.modes"),
                black_box("type.googleapis.com/arqon.demo.BowlModes"),
                black_box(&[] as &[u8]),
            )
        })
    });
    c.bench_function("sam: output check, uncovered topic", |b| {
        b.iter(|| {
            m.check_output(
                black_box("lab.rig.temp"),
                black_box("t/x"),
                black_box(&[] as &[u8]),
            )
        })
    });
    // The same 1 KiB Reading through the relaxed and the strict check.
    let payload = reading::template(1024).unwrap().bytes;
    let relaxed = reading_manifest(false);
    let strict = reading_manifest(true);
    assert!(strict.is_strict() && !relaxed.is_strict());
    strict
        .check_output("bench.types.pulse", reading::TYPE_URL, &payload)
        .unwrap();
    let with_undeclared = [&payload[..], &[15 << 3, 1]].concat();
    assert!(strict
        .check_output("bench.types.pulse", reading::TYPE_URL, &with_undeclared)
        .is_err());
    for (name, m) in [
        ("sam: relaxed output check, 1 KiB Reading", &relaxed),
        ("sam: strict output check, 1 KiB Reading", &strict),
    ] {
        c.bench_function(name, |b| {
            b.iter(|| {
                m.check_output(
                    black_box("bench.types.pulse"),
                    black_box(reading::TYPE_URL),
                    black_box(&payload),
                )
            })
        });
    }
    c.bench_function("sam: validate a strict manifest (descriptor set)", |b| {
        let wire = OperatorManifest {
            name: "bench-types".into(),
            output_schemas: vec![SchemaRef {
                topic_pattern: "bench.types.>".into(),
                type_url: reading::TYPE_URL.into(),
            }],
            descriptor_set: reading::descriptor_set().into(),
            ..Default::default()
        };
        b.iter(|| Manifest::validate(black_box(&wire)).unwrap())
    });
    let envelope = ArqonMessage {
        id: "0190f3a2-7c1e-7000-8000-000000000001".into(),
        topic: "audio.raw.mic1".into(),
        reality_id: "lab-audio".into(),
        payload: Some(prost_types::Any {
            type_url: "type.googleapis.com/arqon.demo.Audio".into(),
            value: vec![7u8; 1024],
        }),
        ..Default::default()
    }
    .encode_to_vec();
    c.bench_function("sam: input check with the envelope walk (1 KiB)", |b| {
        b.iter(|| {
            let mut view = LazyView::new(black_box(&envelope));
            let v = view.get().unwrap();
            m.takes_input(v.topic, v.type_url)
        })
    });
    let circuits = Circuits::default();
    let checked = circuit::check(CircuitFile::parse(HYBRID).unwrap()).unwrap();
    circuits
        .registry
        .install(std::sync::Arc::new(checked))
        .unwrap();
    c.bench_function("circuit: edge check (5 stages)", |b| {
        b.iter(|| {
            circuits.check_publish(
                black_box("lab-audio"),
                black_box("audio.features.vector"),
                black_box("type.googleapis.com/arqon.demo.Features"),
            )
        })
    });
    let none = Circuits::default();
    c.bench_function("circuit: no circuit applied", |b| {
        b.iter(|| none.check_publish(black_box("lab-audio"), black_box("a.b"), black_box("t/x")))
    });

    let base: Vec<u8> = (0..1024u32).map(|i| (i * 31 % 251) as u8).collect();
    let mut next = base.clone();
    for at in (0..1024).step_by(101) {
        next[at] ^= 0x5a;
    }
    let d = codec::encode(&base, &next);
    c.bench_function("delta: encode 1 KiB, 10 bytes changed", |b| {
        b.iter(|| codec::encode(black_box(&base), black_box(&next)))
    });
    c.bench_function("delta: apply 1 KiB, 10 bytes changed", |b| {
        b.iter(|| codec::apply(black_box(&base), black_box(&d), 1 << 20).unwrap())
    });
    c.bench_function("delta: CRC-32 of 1 KiB", |b| {
        b.iter(|| codec::checksum(black_box(&next)))
    });
}

criterion_group!(benches, types);
criterion_main!(benches);
