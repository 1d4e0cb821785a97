//! The host side of the ABI against the fixtures in tests/fixtures/policy (text format), without
//! a server: every way a guest can fail ends in a fault, and only an explicit allow passes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arqonbus_proto::v1::ArqonMessage;

use super::*;
use crate::config::PolicyConfig;
use crate::metrics::ShardCounters;

fn fixture(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/tests/fixtures/policy/{name}.wat",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn host() -> Arc<PolicyHost> {
    Arc::new(PolicyHost::new(&PolicyConfig::default()).unwrap())
}

fn spec(name: &str, topic: &str, limits: Limits, order: i32) -> PolicySpec {
    PolicySpec {
        name: name.into(),
        bindings: vec![Binding::parse("*", topic).unwrap()],
        limits,
        params: BTreeMap::new(),
        order,
    }
}

fn limits() -> Limits {
    Limits {
        fuel_per_call: 1_000_000,
        max_memory_pages: 16,
        deadline_ms: 50,
    }
}

fn install(host: &PolicyHost, name: &str, fixture_name: &str, limits: Limits, order: i32) {
    let compiled = host
        .compile(spec(name, "a.>", limits, order), &fixture(fixture_name))
        .unwrap();
    host.registry.install(Arc::new(compiled)).unwrap();
}

fn pulse(topic: &str) -> ArqonMessage {
    ArqonMessage {
        reality_id: "lab-1".into(),
        topic: topic.into(),
        ..Default::default()
    }
}

fn check(shard: &mut ShardPolicies, topic: &str) -> Decision {
    shard.check(&pulse(topic), 10, &ShardCounters::default())
}

fn fault_reason(d: Decision) -> String {
    match d {
        Decision::Fault { reason, .. } => reason,
        other => panic!("expected a fault, got {other:?}"),
    }
}

#[test]
fn allow_and_deny_with_reason() {
    let host = host();
    install(&host, "open", "allow_all", limits(), 0);
    let mut shard = ShardPolicies::new(host.clone());
    assert_eq!(check(&mut shard, "a.b"), Decision::Allow);
    install(&host, "shut", "deny_all", limits(), 1);
    assert_eq!(
        check(&mut shard, "a.b"),
        Decision::Denied {
            policy: "shut".into(),
            code: 7,
            reason: "closed".into()
        }
    );
    // Not bound: no policy runs.
    assert_eq!(check(&mut shard, "b.c"), Decision::Allow);
}

#[test]
fn order_decides_which_policy_answers_first() {
    let host = host();
    install(&host, "zz-trap", "trap", limits(), 0);
    install(&host, "aa-deny", "deny_all", limits(), 1);
    let mut shard = ShardPolicies::new(host.clone());
    assert!(
        matches!(check(&mut shard, "a.b"), Decision::Fault { policy, .. } if &*policy == "zz-trap")
    );
    // Same order: by name.
    install(&host, "zz-trap", "trap", limits(), 1);
    assert!(
        matches!(check(&mut shard, "a.b"), Decision::Denied { policy, .. } if &*policy == "aa-deny")
    );
}

#[test]
fn replacing_and_unloading_take_effect_on_the_next_pulse() {
    let host = host();
    install(&host, "p", "deny_all", limits(), 0);
    let mut shard = ShardPolicies::new(host.clone());
    assert!(matches!(check(&mut shard, "a.b"), Decision::Denied { .. }));
    install(&host, "p", "allow_all", limits(), 0);
    assert_eq!(check(&mut shard, "a.b"), Decision::Allow);
    install(&host, "p", "deny_all", limits(), 0);
    assert!(matches!(check(&mut shard, "a.b"), Decision::Denied { .. }));
    host.registry.remove("p").unwrap();
    assert_eq!(check(&mut shard, "a.b"), Decision::Allow);
}

#[test]
fn trap_is_a_fault() {
    let host = host();
    install(&host, "p", "trap", limits(), 0);
    let mut shard = ShardPolicies::new(host);
    let reason = fault_reason(check(&mut shard, "a.b"));
    assert!(reason.contains("unreachable"), "{reason}");
    // The instance is remade and faults again: fail-closed every time.
    assert!(matches!(check(&mut shard, "a.b"), Decision::Fault { .. }));
}

#[test]
fn garbage_answer_is_a_fault() {
    let host = host();
    install(&host, "p", "garbage_answer", limits(), 0);
    let mut shard = ShardPolicies::new(host);
    let reason = fault_reason(check(&mut shard, "a.b"));
    assert!(reason.contains("neither allow nor deny"), "{reason}");
}

#[test]
fn missing_export_is_a_fault() {
    let host = host();
    install(&host, "p", "missing_export", limits(), 0);
    let mut shard = ShardPolicies::new(host);
    let reason = fault_reason(check(&mut shard, "a.b"));
    assert!(reason.contains("arqon_inspect"), "{reason}");
}

#[test]
fn unresolved_import_is_a_fault() {
    let host = host();
    install(&host, "p", "unresolved_import", limits(), 0);
    let mut shard = ShardPolicies::new(host);
    let reason = fault_reason(check(&mut shard, "a.b"));
    assert!(reason.contains("instantiate"), "{reason}");
}

#[test]
fn memory_growth_stops_at_the_page_cap() {
    let host = host();
    let l = Limits {
        fuel_per_call: 1_000_000_000,
        ..limits()
    };
    install(&host, "p", "memory_growth", l, 0);
    let mut shard = ShardPolicies::new(host);
    let reason = fault_reason(check(&mut shard, "a.b"));
    assert!(reason.contains("memory"), "{reason}");
}

#[test]
fn infinite_loop_runs_out_of_fuel() {
    let host = host();
    let l = Limits {
        fuel_per_call: 100_000,
        deadline_ms: 1000,
        ..limits()
    };
    install(&host, "p", "infinite_loop", l, 0);
    let mut shard = ShardPolicies::new(host);
    let reason = fault_reason(check(&mut shard, "a.b"));
    assert!(reason.contains("fuel exhausted"), "{reason}");
}

#[test]
fn infinite_loop_misses_its_deadline() {
    let host = host();
    let l = Limits {
        fuel_per_call: u64::MAX / 4,
        deadline_ms: 30,
        ..limits()
    };
    install(&host, "p", "infinite_loop", l, 0);
    let mut shard = ShardPolicies::new(host);
    // The first call also instantiates; time the second.
    let _ = check(&mut shard, "a.b");
    let started = Instant::now();
    let reason = fault_reason(check(&mut shard, "a.b"));
    let took = started.elapsed();
    assert!(reason.contains("deadline"), "{reason}");
    assert!(took >= Duration::from_millis(30), "stopped early: {took:?}");
    // Deadline plus one tick, and room for a busy machine.
    assert!(took < Duration::from_millis(300), "stopped late: {took:?}");
}

#[test]
fn text_that_is_not_wasm_does_not_compile() {
    let host = host();
    let err = host
        .compile(spec("p", "a.>", limits(), 0), b"(module (func")
        .unwrap_err();
    assert!(matches!(err, PolicyError::Compile { .. }), "{err}");
}

/// With no policy loaded the epoch ticker idles (a bus without policies should not wake a
/// thousand times a second); a load brings the 1 ms ticks back at once, since deadlines count
/// them. Robust to a slow machine: a busy machine can only make the idle count smaller, and the
/// active count is checked against what idling could never reach in the time allowed.
#[test]
fn epoch_ticker_idles_without_policies_and_wakes_on_load() {
    let host = Arc::new(
        PolicyHost::new(&PolicyConfig {
            max_deadline_ms: 50,
            default_deadline_ms: 20,
            ..PolicyConfig::default()
        })
        .unwrap(),
    );
    // Dormant once the catalog has been empty for max_deadline_ms + 1 s.
    std::thread::sleep(std::time::Duration::from_millis(1_300));
    let before = host.epoch_ticks();
    std::thread::sleep(std::time::Duration::from_millis(1_000));
    let idle = host.epoch_ticks() - before;
    assert!(
        idle <= 8,
        "{idle} ticks in a second with no policy (250 ms apart when idle)"
    );

    install(&host, "p", "allow_all", limits(), 0);
    let start = std::time::Instant::now();
    let loaded = host.epoch_ticks();
    // 100 ticks: 0.1 s at 1 ms, 25 s if the ticker were still idling.
    while host.epoch_ticks() < loaded + 100 {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(10),
            "the ticker did not resume after a load"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}
