//! The cost of CASIL at the shield, per pulse: one `energy_cap` evaluation (encode the
//! PolicyInput, copy it into the instance, run the guest, read its answer) on a small and on a
//! 1 KiB job, allowing and denying; the same around a guest that only answers allow (the host's
//! share); a pulse the policy is not bound to; and no policy at all.
//!
//! `cargo bench -p arqonbus --bench policy` (builds policy/guest for wasm32 first).

#[path = "../../tests/common/guest.rs"]
#[allow(dead_code)]
mod guest;

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Arc;

use arqonbus::config::PolicyConfig;
use arqonbus::metrics::ShardCounters;
use arqonbus::policy::{Binding, Decision, Limits, PolicyHost, PolicySpec, ShardPolicies};
use arqonbus::proto::nvm::v1::NvmJob;
use arqonbus::proto::v1::ArqonMessage;
use criterion::{criterion_group, criterion_main, Criterion};
use prost::{Message, Name};

fn job(energy_joules: f64, payload_bytes: usize) -> ArqonMessage {
    let mut job = NvmJob {
        job_id: "job-1".into(),
        program: "anneal".into(),
        energy_joules,
        parameters: BTreeMap::new(),
    };
    let base = job.encoded_len();
    if payload_bytes > base + 8 {
        job.parameters
            .insert("pad".into(), "x".repeat(payload_bytes - base - 8));
    }
    ArqonMessage {
        reality_id: "lab-1".into(),
        topic: "nvm.job.submit".into(),
        producer_id: "alice".into(),
        payload: Some(prost_types::Any {
            type_url: NvmJob::type_url(),
            value: job.encode_to_vec(),
        }),
        ..Default::default()
    }
}

/// A host with one policy bound to `nvm.job.submit`.
fn host_with(config: &PolicyConfig, name: &str, wasm: &[u8]) -> Arc<PolicyHost> {
    let host = Arc::new(PolicyHost::new(config).expect("policy engine"));
    let spec = PolicySpec {
        name: name.into(),
        bindings: vec![Binding::parse("*", "nvm.job.submit").unwrap()],
        limits: Limits::resolve(config, 0, 0, 0).unwrap(),
        params: BTreeMap::from([("max_energy_joules".to_owned(), "50".to_owned())]),
        order: 0,
    };
    let policy = host.compile(spec, wasm).expect("the policy compiles");
    host.registry.install(Arc::new(policy)).unwrap();
    host
}

fn bench(c: &mut Criterion) {
    let config = PolicyConfig::default();
    let counters = ShardCounters::default();
    let energy_cap = std::fs::read(guest::guest_wasm("energy_cap")).expect("energy_cap.wasm");
    let mut with_cap = ShardPolicies::new(host_with(&config, "energy_cap", &energy_cap));
    // The floor: the host's side of the ABI around a guest that only answers allow.
    let allow_all = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/policy/allow_all.wat"
    ))
    .expect("allow_all.wat");
    let mut with_allow_all = ShardPolicies::new(host_with(&config, "allow_all", &allow_all));
    let mut without = ShardPolicies::new(Arc::new(PolicyHost::new(&config).unwrap()));

    let mut g = c.benchmark_group("policy");
    for (name, message, allowed) in [
        ("energy_cap_allow_small", job(49.0, 40), true),
        ("energy_cap_allow_1k", job(49.0, 1024), true),
        ("energy_cap_deny_1k", job(51.0, 1024), false),
    ] {
        let frame_bytes = message.encoded_len() + 8;
        let first = with_cap.check(&message, frame_bytes, &counters);
        assert_eq!(first == Decision::Allow, allowed, "{name}: {first:?}");
        g.bench_function(name, |b| {
            b.iter(|| with_cap.check(black_box(&message), frame_bytes, &counters))
        });
    }
    let message = job(49.0, 1024);
    g.bench_function("allow_all_wat_1k", |b| {
        b.iter(|| with_allow_all.check(black_box(&message), 1100, &counters))
    });
    let mut unbound = job(49.0, 1024);
    unbound.topic = "nvm.job.status".into();
    g.bench_function("energy_cap_loaded_not_bound_1k", |b| {
        b.iter(|| with_cap.check(black_box(&unbound), 1100, &counters))
    });
    let message = job(49.0, 1024);
    g.bench_function("no_policies_1k", |b| {
        b.iter(|| without.check(black_box(&message), 1100, &counters))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
