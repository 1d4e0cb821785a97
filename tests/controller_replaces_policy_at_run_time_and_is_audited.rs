//! A controller loads, replaces and unloads a policy at run time: each change takes effect for
//! the next pulse on every shard, and each is in the audit log (after the config file's load),
//! chained, with the controller as actor, before it took effect.

mod common;

use arqonbus::config::{BindingConfig, PolicyFile};
use arqonbus::proto::policy::v1::PolicyLimits;
use arqonbus::proto::v1::ErrorCode;
use arqonbus_client::{Client, Outgoing};
use common::guest::guest_wasm;
use common::policy::{
    arqonbus, audit_records, controller, nvm_job, unload, Load, CONTROLLER_TOKEN,
};
use common::{client_on_shard, TestBus};

fn denylist(topics: &str) -> Load<'_> {
    Load {
        name: "denylist",
        wasm: std::fs::read(guest_wasm("topic_denylist")).unwrap(),
        reality_glob: "lab-*",
        topic_pattern: ">",
        params: vec![("topics", topics)],
        limits: PolicyLimits::default(),
    }
}

async fn code_of(client: &Client, topic: &str) -> Option<ErrorCode> {
    client
        .publish_acked(Outgoing::new("lab-1", topic).bytes(b"x".to_vec()))
        .await
        .err()
        .and_then(|e| e.code())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_replaces_policy_at_run_time_and_is_audited() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_owned();
    let energy_cap = guest_wasm("energy_cap");
    let bus = TestBus::start(move |c| {
        c.data_dir = data_dir;
        c.control.controller_tokens = vec![CONTROLLER_TOKEN.into()];
        c.policies = vec![PolicyFile {
            name: "energy_cap".into(),
            wasm_path: energy_cap,
            bindings: vec![BindingConfig {
                reality_glob: "*".into(),
                topic_pattern: "nvm.job.submit".into(),
            }],
            order: 0,
            params: [("max_energy_joules".to_owned(), "50".to_owned())].into(),
            fuel_per_call: 0,
            max_memory_pages: 0,
            deadline_ms: 0,
        }];
    });
    let ctl = controller(bus.addr).await;
    let users = [
        client_on_shard(bus.addr, 0).await,
        client_on_shard(bus.addr, 1).await,
    ];
    for u in &users {
        assert_eq!(code_of(u, "rig.a.reset").await, None);
    }

    // Load: rig resets are denied on every shard.
    ctl.publish_acked(denylist("rig.*.reset").pulse("ops"))
        .await
        .expect("load applied");
    for u in &users {
        assert_eq!(
            code_of(u, "rig.a.reset").await,
            Some(ErrorCode::PolicyDenied)
        );
        assert_eq!(code_of(u, "rig.a.halt").await, None);
    }

    // Replace: now halts are denied and resets pass.
    ctl.publish_acked(denylist("rig.*.halt").pulse("ops"))
        .await
        .expect("replacement applied");
    for u in &users {
        assert_eq!(code_of(u, "rig.a.reset").await, None);
        assert_eq!(
            code_of(u, "rig.a.halt").await,
            Some(ErrorCode::PolicyDenied)
        );
    }

    // Replace energy_cap (from the config file) with a stricter cap.
    let stricter = Load {
        name: "energy_cap",
        wasm: std::fs::read(guest_wasm("energy_cap")).unwrap(),
        reality_glob: "*",
        topic_pattern: "nvm.job.submit",
        params: vec![("max_energy_joules", "10")],
        limits: PolicyLimits::default(),
    };
    users[0]
        .publish_acked(nvm_job("lab-1", 20.0, 100))
        .await
        .unwrap();
    ctl.publish_acked(stricter.pulse("ops")).await.unwrap();
    let err = users[1]
        .publish_acked(nvm_job("lab-1", 20.0, 100))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::PolicyDenied), "{err}");

    // Unload: everything passes again.
    ctl.publish_acked(unload("ops", "denylist")).await.unwrap();
    for u in &users {
        assert_eq!(code_of(u, "rig.a.halt").await, None);
    }
    // Unloading what is not loaded is refused, and audited too.
    let err = ctl
        .publish_acked(unload("ops", "denylist"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::InvalidRequest), "{err}");
    // A module that does not compile is refused; the policy in place stays.
    let mut broken = denylist("rig.*.reset");
    broken.name = "energy_cap";
    broken.wasm = b"(module (func".to_vec();
    let err = ctl.publish_acked(broken.pulse("ops")).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::InvalidRequest), "{err}");
    assert!(err.to_string().contains("does not compile"), "{err}");
    assert!(users[0]
        .publish_acked(nvm_job("lab-1", 20.0, 100))
        .await
        .is_err());

    let m = bus.metrics();
    assert_eq!(m.control_pulses, 6);
    assert_eq!(m.control_refusals, 2);
    bus.stop();

    let records = audit_records(dir.path());
    let summary: Vec<(&str, &str, &str)> = records
        .iter()
        .map(|r| {
            (
                r.action.as_str(),
                r.target.as_str(),
                r.details["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("policy.load", "energy_cap", "applied"),
            ("sys.control.policy.load", "denylist", "applied"),
            ("sys.control.policy.load", "denylist", "applied"),
            ("sys.control.policy.load", "energy_cap", "applied"),
            ("sys.control.policy.unload", "denylist", "applied"),
            ("sys.control.policy.unload", "denylist", "refused"),
            ("sys.control.policy.load", "energy_cap", "refused"),
        ]
    );
    assert_eq!(records[0].actor, "config");
    for r in &records[1..] {
        assert!(r.actor.starts_with("controller session="), "{}", r.actor);
        assert!(!r.actor.contains(CONTROLLER_TOKEN));
    }
    // The replacement names what it replaced.
    assert_eq!(
        records[2].details["replaced_sha256"],
        records[1].details["sha256"]
    );
    assert_eq!(
        records[3].details["spec"]["params"]["max_energy_joules"],
        "10"
    );
    assert!(records[6].details["reason"]
        .as_str()
        .unwrap()
        .contains("does not compile"));

    let out = arqonbus(&[
        "audit",
        "verify",
        "--data-dir",
        dir.path().to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("7 records"), "{stdout}");
}
