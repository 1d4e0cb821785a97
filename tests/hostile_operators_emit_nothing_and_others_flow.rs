//! Each hostile operator fixture, loaded at run time by a controller, is stopped within its caps
//! on every input: nothing it emitted for that input is sequenced, a fault notice names the cause
//! on `sys.operator.fault`, and after `operator.max_consecutive_faults` in a row it is parked for
//! the reality. Meanwhile another reality on the same shard, with a well-behaved operator, keeps
//! flowing. A module that does not compile is refused and the operator in place stays.

mod common;

use arqonbus::config::ParamConfig;
use arqonbus::operator::OperatorFault;
use arqonbus::proto::operator::v1::OperatorLimits;
use arqonbus::proto::v1::ErrorCode;
use arqonbus_client::Outgoing;
use common::guest::operator_wasm;
use common::operator::{fixture, load_pulse, next, operator_file, quiet, reality_on_shard};
use common::policy::{controller, CONTROLLER_TOKEN};
use common::{client_on_shard, TestBus};
use prost::Message;

const MAX_FAULTS: u64 = 3;

async fn hostile_operator_is_stopped(name: &str, limits: OperatorLimits, expect: &str) {
    let echo = operator_wasm("echo");
    let hostile = reality_on_shard("hostile", 1, 2);
    let calm = reality_on_shard("calm", 1, 2);
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_owned();
    let bus = TestBus::start(move |c| {
        c.data_dir = data_dir;
        c.control.controller_tokens = vec![CONTROLLER_TOKEN.into()];
        c.operator.max_consecutive_faults = MAX_FAULTS;
        c.operators = vec![operator_file(
            "echo",
            echo,
            "calm-*",
            "calm.>",
            &[("copies", ParamConfig::Number(1.0))],
        )];
    });
    let ctl = controller(bus.addr).await;
    let wasm = std::fs::read(fixture(name)).unwrap();
    ctl.publish_acked(load_pulse(
        "ops",
        "hostile",
        wasm,
        ("hostile-*", ">"),
        limits,
        &[],
    ))
    .await
    .expect("a controller may load any module that compiles");

    let client = client_on_shard(bus.addr, 0).await;
    let mut h = client.subscribe(&hostile, ">").await.unwrap();
    let mut c = client.subscribe(&calm, ">").await.unwrap();
    for round in 0..MAX_FAULTS + 2 {
        let ack = client
            .publish_acked(Outgoing::new(&hostile, "hostile.in.tick").bytes("go"))
            .await
            .unwrap();
        let input = next(&mut h, 15).await;
        assert_eq!(input.sequence, ack.sequence);
        if round < MAX_FAULTS {
            let notice = next(&mut h, 15).await;
            assert_eq!(notice.topic, "sys.operator.fault", "{name}: {notice:?}");
            assert_eq!(notice.emitted_by, "hostile");
            assert_eq!(
                notice.sequence,
                input.sequence + 1,
                "nothing before the notice"
            );
            let fault = OperatorFault::decode(&notice.payload.unwrap().value[..]).unwrap();
            assert_eq!(fault.input_sequence, input.sequence);
            assert!(fault.reason.contains(expect), "{name}: {}", fault.reason);
            assert_eq!(u64::from(fault.consecutive_faults), round + 1);
            assert_eq!(fault.parked, round + 1 == MAX_FAULTS);
        }
        // The well-behaved operator on the same shard goes on.
        let ack = client
            .publish_acked(Outgoing::new(&calm, "calm.in.tick").bytes("ok"))
            .await
            .unwrap();
        let calm_input = next(&mut c, 15).await;
        assert_eq!(calm_input.sequence, ack.sequence);
        let echoed = next(&mut c, 15).await;
        assert_eq!(echoed.emitted_by, "echo");
        assert_eq!(echoed.input_sequence, calm_input.sequence);
    }
    assert!(
        quiet(&mut h, 300).await,
        "{name}: a parked operator emits nothing"
    );
    let m = bus.metrics();
    assert_eq!(m.operator_faults, MAX_FAULTS, "{name}");
    assert_eq!(m.operator_parked, 1, "{name}");
}

fn limits(fuel: u64, pages: u32, deadline_ms: u32, emits: u32) -> OperatorLimits {
    OperatorLimits {
        fuel_per_call: fuel,
        max_memory_pages: pages,
        deadline_ms,
        max_emits_per_call: emits,
        max_emit_bytes_per_call: 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn infinite_loop_runs_out_of_fuel() {
    hostile_operator_is_stopped("infinite_loop", limits(200_000, 0, 0, 0), "fuel exhausted").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn infinite_loop_with_fuel_to_spare_misses_its_deadline() {
    let l = limits(1_000_000_000, 0, 30, 0);
    hostile_operator_is_stopped("infinite_loop", l, "deadline of 30 ms missed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_bomb_stops_at_its_page_cap() {
    hostile_operator_is_stopped("memory_bomb", limits(0, 4, 0, 0), "memory").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emit_flood_stops_at_its_emit_cap() {
    let l = limits(0, 0, 0, 8);
    hostile_operator_is_stopped("emit_flood", l, "max_emits_per_call (8)").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trap_after_emitting_keeps_none_of_it() {
    hostile_operator_is_stopped("trap_mid_emit", limits(0, 0, 0, 0), "trapped").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_export_cannot_be_used() {
    hostile_operator_is_stopped("missing_export", limits(0, 0, 0, 0), "arqon_operate").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_imports_cannot_be_instantiated() {
    hostile_operator_is_stopped("wasi_import", limits(0, 0, 0, 0), "cannot instantiate").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emits_on_reserved_topics_are_refused() {
    hostile_operator_is_stopped("bad_emit", limits(0, 0, 0, 0), "reserved for the bus").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_that_does_not_compile_is_refused_and_the_old_one_stays() {
    let echo = operator_wasm("echo");
    let reality = reality_on_shard("calm", 0, 2);
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_owned();
    let bus = TestBus::start(move |c| {
        c.data_dir = data_dir;
        c.control.controller_tokens = vec![CONTROLLER_TOKEN.into()];
        c.operators = vec![operator_file("echo", echo, "calm-*", "calm.>", &[])];
    });
    let ctl = controller(bus.addr).await;
    let garbage = b"\0asm\x01\0\0\0 this is not a module".to_vec();
    let err = ctl
        .publish_acked(load_pulse(
            "ops",
            "echo",
            garbage,
            ("calm-*", ">"),
            limits(0, 0, 0, 0),
            &[],
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::InvalidRequest), "{err}");
    assert!(err.to_string().contains("does not compile"), "{err}");
    let client = client_on_shard(bus.addr, 1).await;
    let mut sub = client.subscribe(&reality, ">").await.unwrap();
    client
        .publish_acked(Outgoing::new(&reality, "calm.in.tick").bytes("ok"))
        .await
        .unwrap();
    let _input = next(&mut sub, 10).await;
    assert_eq!(
        next(&mut sub, 10).await.emitted_by,
        "echo",
        "the old echo still runs"
    );
    // A non-controller may not load operators.
    let err = client
        .publish_acked(load_pulse(
            "ops",
            "x",
            vec![],
            ("*", ">"),
            limits(0, 0, 0, 0),
            &[],
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::PermissionDenied), "{err}");
}
