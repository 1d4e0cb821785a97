//! The cost of a hosted operator per input, on the owner shard: encode the OperatorInput, copy
//! it into the instance, run the guest, take its emits and build each output's envelope — the
//! work `ShardOperators::on_sequenced` adds after the sequencer (the sink here only stamps the
//! output, it stores and delivers nothing). Three guests: `echo` (one emit of the input's
//! payload: mostly the host's share), `kuramoto` with 16 oscillators (an Euler step: mostly
//! guest work), and a pulse no operator binds (the cost every other pulse pays).
//!
//! `cargo bench -p arqonbus --bench operator` (builds operator/guest for wasm32 first).

#[path = "../../tests/common/guest.rs"]
#[allow(dead_code)]
mod guest;

use std::hint::black_box;
use std::sync::Arc;

use arqonbus::config::{OperatorConfig, PolicyConfig};
use arqonbus::metrics::ShardCounters;
use arqonbus::operator::{
    stamp_output, AskedLimits, Limits, OperatorHost, OperatorSpec, Param, Params, Sequencing,
    ShardOperators,
};
use arqonbus::policy::{Binding, PolicyHost};
use arqonbus::proto::v1::ArqonMessage;
use criterion::{criterion_group, criterion_main, Criterion};

struct Stamp(u64);

impl Sequencing for Stamp {
    fn sequence_output(&mut self, mut output: ArqonMessage) -> Option<ArqonMessage> {
        self.0 += 1;
        let ts = output.timestamp_unix_nanos;
        stamp_output(&mut output, self.0, ts);
        Some(black_box(output))
    }
}

fn shard_with(name: &str, topic: &str, params: Params) -> ShardOperators {
    let policy_host = Arc::new(PolicyHost::new(&PolicyConfig::default()).expect("engine"));
    let config = OperatorConfig::default();
    let host = Arc::new(OperatorHost::new(policy_host, &config));
    let spec = OperatorSpec {
        name: name.into(),
        bindings: vec![Binding::parse("*", topic).unwrap()],
        limits: Limits::resolve(&config, AskedLimits::default()).unwrap(),
        params,
        // No SAM manifest: the hosted operator's outputs are not type-checked here.
        manifest: None,
    };
    let wasm = std::fs::read(guest::operator_wasm(name)).expect("the example is built");
    let op = host.compile(spec, &wasm).expect("compiles");
    host.registry.install(Arc::new(op)).unwrap();
    ShardOperators::new(host)
}

fn input(topic: &str, payload_bytes: usize) -> ArqonMessage {
    ArqonMessage {
        reality_id: "lab-1".into(),
        topic: topic.into(),
        sequence: 1,
        timestamp_unix_nanos: 1_700_000_000_000_000_000,
        producer_id: "alice".into(),
        payload: Some(prost_types::Any {
            type_url: "application/octet-stream".into(),
            value: vec![7; payload_bytes],
        }),
        ..Default::default()
    }
}

fn bench(c: &mut Criterion) {
    let counters = ShardCounters::default();
    let mut g = c.benchmark_group("operator");

    let mut echo = shard_with("echo", "ops.in.>", Params::new());
    let pulse = input("ops.in.reading", 1024);
    let mut sink = Stamp(1);
    g.bench_function("echo_one_emit_1k", |b| {
        b.iter(|| echo.on_sequenced(black_box(&pulse), &counters, &mut sink))
    });
    let unbound = input("other.topic.x", 1024);
    g.bench_function("unbound_pulse_wants", |b| {
        b.iter(|| black_box(echo.wants(&unbound.reality_id, black_box(&unbound.topic))))
    });

    let params = Params::from([("oscillators".to_owned(), Param::Number(16.0))]);
    let mut kuramoto = shard_with("kuramoto", "sim.kuramoto.tick", params);
    let tick = input("sim.kuramoto.tick", 4);
    g.bench_function("kuramoto_step_16_oscillators", |b| {
        b.iter(|| kuramoto.on_sequenced(black_box(&tick), &counters, &mut sink))
    });
    g.finish();
    assert_eq!(
        counters.operator_faults.get(),
        0,
        "the benchmarked operators never fault"
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
