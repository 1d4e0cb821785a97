//! Each hostile fixture, loaded at run time by a controller, blocks every pulse it is bound to
//! with POLICY_FAULT, within its deadline, while a bystander on the same shard keeps publishing
//! and getting acks, and pulses outside the policy's binding pass.

mod common;

use std::time::{Duration, Instant};

use arqonbus::proto::policy::v1::PolicyLimits;
use arqonbus::proto::v1::ErrorCode;
use arqonbus_client::Outgoing;
use common::policy::{controller, fixture, Load, CONTROLLER_TOKEN};
use common::{bystander, client_on_shard, TestBus};

const DEADLINE_MS: u32 = 50;
/// Room for a busy two-core machine on top of a deadline.
const SLACK: Duration = Duration::from_millis(500);
const HOSTILE_PULSES: usize = 5;

async fn hostile_policy_is_blocked(fixture_name: &str, limits: PolicyLimits, expect: &str) {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_owned();
    let bus = TestBus::start(move |c| {
        c.data_dir = data_dir;
        c.control.controller_tokens = vec![CONTROLLER_TOKEN.into()];
    });
    let ctl = controller(bus.addr).await;
    let wasm = std::fs::read(fixture(fixture_name)).unwrap();
    let load = Load {
        name: "hostile",
        wasm,
        reality_glob: "hostile-*",
        topic_pattern: ">",
        params: vec![],
        limits,
    };
    ctl.publish_acked(load.pulse("ops"))
        .await
        .expect("a controller may load any module that compiles");

    let hostile = client_on_shard(bus.addr, 1).await;
    let calm = bystander::start(client_on_shard(bus.addr, 1).await, "calm");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let acks_before = calm.acks();
    let deadline = Duration::from_millis(u64::from(limits.deadline_ms));
    for i in 0..HOSTILE_PULSES {
        let started = Instant::now();
        let err = hostile
            .publish_acked(Outgoing::new("hostile-1", "lab.rig.go").bytes(vec![i as u8; 64]))
            .await
            .expect_err("a hostile policy never lets a pulse through");
        let took = started.elapsed();
        assert_eq!(err.code(), Some(ErrorCode::PolicyFault), "{err}");
        let text = err.to_string();
        assert!(text.contains("hostile"), "{text}");
        assert!(
            text.contains(expect),
            "{fixture_name}: expected `{expect}` in {text}"
        );
        assert!(
            took < deadline + SLACK,
            "{fixture_name}: blocked after {took:?}, deadline {deadline:?}"
        );
    }
    // Outside the binding, the same client's pulses pass.
    hostile
        .publish_acked(Outgoing::new("lab-1", "lab.rig.go").bytes(b"fine".to_vec()))
        .await
        .expect("pulses the policy is not bound to pass");

    tokio::time::sleep(Duration::from_millis(100)).await;
    let (acks, worst) = calm.stop().await;
    let during = acks - acks_before;
    assert!(
        during >= 10,
        "{fixture_name}: the bystander got only {during} acks"
    );
    assert!(
        worst < deadline + SLACK,
        "{fixture_name}: a bystander ack took {worst:?}"
    );

    let m = bus.metrics();
    assert_eq!(m.policy_faults, HOSTILE_PULSES as u64, "{m:?}");
    assert_eq!(m.policy_denials, 0);
}

fn limits(fuel_per_call: u64) -> PolicyLimits {
    PolicyLimits {
        fuel_per_call,
        max_memory_pages: 16,
        deadline_ms: DEADLINE_MS,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn infinite_loop_is_stopped_by_its_deadline() {
    // Fuel enough for seconds of looping: the deadline is what stops it.
    hostile_policy_is_blocked("infinite_loop", limits(1_000_000_000), "deadline").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn infinite_loop_is_stopped_by_its_fuel() {
    hostile_policy_is_blocked("infinite_loop", limits(200_000), "fuel exhausted").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unbounded_memory_growth_is_stopped_at_the_page_cap() {
    hostile_policy_is_blocked("memory_growth", limits(1_000_000_000), "memory").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trap_blocks_the_pulse() {
    hostile_policy_is_blocked("trap", limits(0), "unreachable").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_answer_blocks_the_pulse() {
    hostile_policy_is_blocked("garbage_answer", limits(0), "neither allow nor deny").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_export_blocks_the_pulse() {
    hostile_policy_is_blocked("missing_export", limits(0), "arqon_inspect").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn module_that_cannot_instantiate_blocks_the_pulse() {
    hostile_policy_is_blocked("unresolved_import", limits(0), "cannot instantiate").await;
}
