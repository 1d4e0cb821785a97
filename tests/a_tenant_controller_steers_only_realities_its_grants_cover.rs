//! A controller with a signed token steers only realities its publish grants cover, for every
//! control pulse that names a reality, not just bindings: reality parameters
//! (`sys.control.param.set`), operator parameters (`sys.control.operator.param`), forks (both
//! the source and the new reality) and circuits (the circuit's reality, and the reality of the
//! circuit of that name it would replace or remove), and what an unload (or a load replacing a
//! module of the same name) takes away: the bindings of the policy or operator in place.
//! Refusals are PERMISSION_DENIED, change nothing, and are audited; role `admin` is not limited.

mod common;

use arqonbus::auth::Role;
use arqonbus::config::SyncMode;
use arqonbus::proto::circuit::v1::{Circuit, CircuitRemove, Stage};
use arqonbus::proto::operator::v1::{OperatorLimits, RealityFork};
use arqonbus::proto::policy::v1::PolicyLimits;
use arqonbus::proto::v1::{param, ErrorCode, Param, PubAck};
use arqonbus_client::{ClientError, Outgoing};
use common::operator::{load_pulse, operator_file, param_pulse, unload_pulse};
use common::policy::{audit_records, fixture, unload, Load};
use common::{client_with_token, retain, token, token_key, TestBus};

fn param_set(reality: &str) -> Outgoing {
    let set = Param {
        name: "gain".into(),
        value: Some(param::Value::Number(2.0)),
        ..Default::default()
    };
    Outgoing::new(reality, "sys.control.param.set").message(&set)
}

fn fork(reality: &str, name: &str) -> Outgoing {
    let fork = RealityFork {
        name: name.into(),
        from_sequence: 2,
        params: Default::default(),
    };
    Outgoing::new(reality, "sys.control.reality.fork").message(&fork)
}

/// A one-stage circuit named `name` in `reality` (sent from the controller's own reality: the
/// circuit's reality is in the payload).
fn circuit(from: &str, name: &str, reality: &str) -> Outgoing {
    let circuit = Circuit {
        name: name.into(),
        reality_id: reality.into(),
        stages: vec![Stage {
            name: "source".into(),
            operator: "sensor".into(),
            output_topic: "rig.reading".into(),
            output_type: "type.googleapis.com/arqon.demo.Reading".into(),
            ..Default::default()
        }],
    };
    Outgoing::new(from, "sys.control.circuit.apply").message(&circuit)
}

fn remove_circuit(from: &str, name: &str) -> Outgoing {
    Outgoing::new(from, "sys.control.circuit.remove").message(&CircuitRemove { name: name.into() })
}

/// A policy that binds `glob` on a topic nobody publishes (it only has to be in place).
fn policy<'a>(name: &'a str, glob: &'a str) -> Load<'a> {
    Load {
        name,
        wasm: std::fs::read(fixture("deny_all")).unwrap(),
        reality_glob: glob,
        topic_pattern: "never.>",
        params: vec![],
        limits: PolicyLimits::default(),
    }
}

fn denied(r: Result<PubAck, ClientError>, what: &str) {
    let err = r.expect_err(what);
    assert_eq!(
        err.code(),
        Some(ErrorCode::PermissionDenied),
        "{what}: {err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_controller_steers_only_realities_its_grants_cover() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_owned();
    let echo = common::guest::operator_wasm("echo");
    let echo_wasm = std::fs::read(&echo).unwrap();
    let mut key = None;
    let bus = TestBus::start(|c| {
        retain(c, &data_dir, "lab-*", SyncMode::Os);
        c.operators = vec![operator_file("echo", echo, "lab-*", "sim.>", &[])];
        key = Some(token_key(c, true));
    });
    let key = key.unwrap();
    let roles = [Role::Controller, Role::Publisher];
    // `lab-a*` covers lab-a and its forks `lab-a~…`; `lab-a` alone covers no fork of it.
    let lab_a = token(&key, "a", &roles, &["lab-a*:>"], &[]);
    let lab_a = client_with_token(bus.addr, &lab_a).await.unwrap();
    let exact = token(&key, "a", &roles, &["lab-a:>"], &[]);
    let exact = client_with_token(bus.addr, &exact).await.unwrap();
    let admin = token(&key, "ops", &[Role::Admin], &[], &[]);
    let admin = client_with_token(bus.addr, &admin).await.unwrap();
    for reality in ["lab-a", "lab-b"] {
        for _ in 0..2 {
            admin
                .publish_acked(Outgoing::new(reality, "rig.reading").bytes("1"))
                .await
                .unwrap();
        }
    }
    admin
        .publish_acked(circuit("ops", "rig-b", "lab-b"))
        .await
        .expect("an admin installs a circuit anywhere");
    admin
        .publish_acked(policy("guard-b", "lab-b").pulse("ops"))
        .await
        .expect("an admin binds a policy anywhere");

    // Outside its grants, each is refused.
    denied(lab_a.publish_acked(param_set("lab-b")).await, "param.set");
    denied(
        lab_a
            .publish_acked(param_pulse("lab-b", "echo", "k", 1.0))
            .await,
        "operator.param",
    );
    denied(lab_a.publish_acked(fork("lab-b", "f")).await, "fork source");
    denied(exact.publish_acked(fork("lab-a", "f")).await, "fork target");
    denied(
        lab_a
            .publish_acked(circuit("lab-a", "rig-a", "lab-b"))
            .await,
        "circuit reality",
    );
    denied(
        lab_a
            .publish_acked(circuit("lab-a", "rig-b", "lab-a"))
            .await,
        "replacing another reality's circuit",
    );
    denied(
        lab_a.publish_acked(remove_circuit("lab-a", "rig-b")).await,
        "removing another reality's circuit",
    );
    // Taking away what binds realities outside its grants: the configured operator `echo`
    // binds every `lab-*`, the admin's policy `guard-b` binds lab-b.
    denied(
        lab_a.publish_acked(unload_pulse("lab-a", "echo")).await,
        "operator unload",
    );
    let replace_echo = load_pulse(
        "lab-a",
        "echo",
        echo_wasm,
        ("lab-a", "sim.>"),
        OperatorLimits::default(),
        &[],
    );
    denied(lab_a.publish_acked(replace_echo).await, "operator replace");
    denied(
        lab_a.publish_acked(unload("lab-a", "guard-b")).await,
        "policy unload",
    );
    denied(
        lab_a
            .publish_acked(policy("guard-b", "lab-a").pulse("lab-a"))
            .await,
        "policy replace",
    );
    // Nothing changed.
    let echo = bus.server().operator_host().registry.get("echo").unwrap();
    assert_eq!(echo.spec.bindings[0].reality.as_str(), "lab-*");
    let guard = bus.server().policy_host().registry.get("guard-b").unwrap();
    assert_eq!(guard.spec.bindings[0].reality.as_str(), "lab-b");
    let circuits = bus.server().shield().circuits.registry.snapshot().1;
    assert_eq!(circuits.len(), 1);
    assert_eq!(circuits[0].circuit.reality_id, "lab-b");
    let replay = admin
        .history(common::history_query("lab-b", None, None, 0))
        .await
        .unwrap()
        .collect_all()
        .await
        .unwrap();
    assert_eq!(replay.0.len(), 2, "no parameter was sequenced into lab-b");

    // Inside them, each is allowed.
    lab_a
        .publish_acked(param_set("lab-a"))
        .await
        .expect("param.set in lab-a");
    lab_a
        .publish_acked(param_pulse("lab-a", "echo", "k", 1.0))
        .await
        .expect("operator.param in lab-a");
    let ack = lab_a
        .publish_acked(fork("lab-a", "f"))
        .await
        .expect("fork of lab-a into lab-a~f");
    assert_eq!(ack.reality_id, "lab-a~f");
    lab_a
        .publish_acked(circuit("lab-a", "rig-a", "lab-a"))
        .await
        .expect("a circuit in lab-a");
    lab_a
        .publish_acked(remove_circuit("lab-a", "rig-a"))
        .await
        .expect("removing its own circuit");
    lab_a
        .publish_acked(policy("guard-a", "lab-a").pulse("lab-a"))
        .await
        .expect("a policy on lab-a");
    lab_a
        .publish_acked(policy("guard-a", "lab-a*").pulse("lab-a"))
        .await
        .expect("replacing its own policy");
    lab_a
        .publish_acked(unload("lab-a", "guard-a"))
        .await
        .expect("unloading its own policy");
    bus.stop();

    let records = audit_records(dir.path());
    let refused: Vec<_> = records
        .iter()
        .filter(|r| r.details["outcome"] == "refused")
        .collect();
    assert_eq!(refused.len(), 11, "{refused:#?}");
    assert!(refused.iter().all(|r| r.details["reason"]
        .as_str()
        .unwrap()
        .contains("no publish grant of this session covers")));
}
