//! A controller with a signed token binds policies and hosted operators only to realities its
//! publish grants cover; a binding that names every reality (`*`) needs role `admin`. Refusals
//! are PERMISSION_DENIED, change nothing, and are audited like any controller's refusal.

mod common;

use arqonbus::auth::Role;
use arqonbus::proto::operator::v1::OperatorLimits;
use arqonbus::proto::policy::v1::PolicyLimits;
use arqonbus::proto::v1::ErrorCode;
use arqonbus_client::Outgoing;
use common::operator::load_pulse;
use common::policy::{audit_records, fixture, Load};
use common::{client_with_token, token, token_key, TestBus};

fn policy(glob: &str) -> Load<'_> {
    Load {
        name: "lockdown",
        wasm: std::fs::read(fixture("deny_all")).unwrap(),
        reality_glob: glob,
        topic_pattern: ">",
        params: vec![],
        limits: PolicyLimits::default(),
    }
}

fn operator(glob: &str) -> Outgoing {
    let wasm = std::fs::read(common::guest::operator_wasm("echo")).unwrap();
    load_pulse(
        "lab-ops",
        "echo",
        wasm,
        (glob, "sim.>"),
        OperatorLimits::default(),
        &[],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_controller_binds_only_realities_its_grants_cover() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_owned();
    let mut key = None;
    let bus = TestBus::start(|c| {
        c.data_dir = data_dir;
        key = Some(token_key(c, true));
    });
    let key = key.unwrap();
    let lab = token(&key, "lab", &[Role::Controller], &["lab-*:>"], &[]);
    let lab = client_with_token(bus.addr, &lab).await.unwrap();
    let denied = |r: Result<arqonbus::proto::v1::PubAck, arqonbus_client::ClientError>| {
        r.expect_err("refused").code()
    };

    for glob in ["other-*", "l*", "*", "lab*"] {
        assert_eq!(
            denied(lab.publish_acked(policy(glob).pulse("lab-ops")).await),
            Some(ErrorCode::PermissionDenied),
            "policy bound to `{glob}`"
        );
        assert_eq!(
            denied(lab.publish_acked(operator(glob)).await),
            Some(ErrorCode::PermissionDenied),
            "operator bound to `{glob}`"
        );
    }
    assert!(bus.server().policy_host().registry.is_empty());
    assert!(bus.server().operator_host().registry.is_empty());
    // What its grants cover, it may bind.
    lab.publish_acked(policy("lab-7").pulse("lab-ops"))
        .await
        .expect("inside its grant");
    lab.publish_acked(policy("lab-*").pulse("lab-ops"))
        .await
        .expect("all of its grant");
    lab.publish_acked(operator("lab-sim-*"))
        .await
        .expect("an operator inside its grant");

    // A global binding needs role admin.
    let admin = token(&key, "ops", &[Role::Admin], &[], &[]);
    let admin = client_with_token(bus.addr, &admin).await.unwrap();
    admin
        .publish_acked(policy("*").pulse("ops"))
        .await
        .expect("an admin binds every reality");
    bus.stop();

    let records = audit_records(dir.path());
    let refused: Vec<_> = records
        .iter()
        .filter(|r| r.details["outcome"] == "refused")
        .collect();
    assert_eq!(refused.len(), 8, "{refused:#?}");
    assert!(refused.iter().any(|r| r.details["reason"]
        .as_str()
        .unwrap()
        .contains("needs role `admin`")));
    assert!(refused.iter().any(|r| r.details["reason"]
        .as_str()
        .unwrap()
        .contains("no publish grant of this session covers")));
}
