//! `sys.control.*` from a session that is not a controller (no token, or a wrong one) is refused
//! with PERMISSION_DENIED, changes nothing, and the refusal is in the audit log.

mod common;

use arqonbus::proto::policy::v1::PolicyLimits;
use arqonbus::proto::v1::ErrorCode;
use arqonbus_client::Outgoing;
use common::policy::{
    audit_records, connect_with_token, controller, fixture, unload, Load, CONTROLLER_TOKEN,
};
use common::TestBus;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_controller_control_pulse_is_refused_and_audited() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_owned();
    let bus = TestBus::start(move |c| {
        c.data_dir = data_dir;
        c.control.controller_tokens = vec![CONTROLLER_TOKEN.into()];
    });
    let deny_all = Load {
        name: "lockdown",
        wasm: std::fs::read(fixture("deny_all")).unwrap(),
        reality_glob: "*",
        topic_pattern: ">",
        params: vec![],
        limits: PolicyLimits::default(),
    };
    let anonymous = connect_with_token(bus.addr, "").await;
    let impostor = connect_with_token(bus.addr, "test-controller-token-0123456780").await;
    for client in [&anonymous, &impostor] {
        let err = client
            .publish_acked(deny_all.pulse("ops"))
            .await
            .expect_err("only controllers may load policies");
        assert_eq!(err.code(), Some(ErrorCode::PermissionDenied), "{err}");
        let err = client
            .publish_acked(unload("ops", "lockdown"))
            .await
            .expect_err("nor unload them");
        assert_eq!(err.code(), Some(ErrorCode::PermissionDenied), "{err}");
        // Nothing changed: pulses still flow.
        client
            .publish_acked(Outgoing::new("lab-1", "lab.rig.go").bytes(b"x".to_vec()))
            .await
            .expect("no policy was loaded");
    }
    assert!(bus.server().policy_host().registry.is_empty());

    // The same request from a controller is applied.
    let ctl = controller(bus.addr).await;
    ctl.publish_acked(deny_all.pulse("ops")).await.unwrap();
    let err = anonymous
        .publish_acked(Outgoing::new("lab-1", "lab.rig.go").bytes(b"x".to_vec()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::PolicyDenied), "{err}");
    // Even when every topic is denied, control pulses still reach the bus: a controller can
    // always undo a policy.
    ctl.publish_acked(unload("ops", "lockdown")).await.unwrap();

    let m = bus.metrics();
    assert_eq!(m.control_pulses, 6);
    assert_eq!(m.control_refusals, 4);
    bus.stop();

    let records = audit_records(dir.path());
    assert_eq!(records.len(), 6, "{records:#?}");
    for r in &records[..4] {
        assert_eq!(r.details["outcome"], "refused");
        assert!(r.actor.starts_with("client session="), "{}", r.actor);
        assert_eq!(r.target, "lockdown");
        assert!(r.details["reason"]
            .as_str()
            .unwrap()
            .contains("only from controllers"));
    }
    assert_eq!(records[0].action, "sys.control.policy.load");
    assert_eq!(records[1].action, "sys.control.policy.unload");
    for r in &records[4..] {
        assert_eq!(r.details["outcome"], "applied");
        assert!(r.actor.starts_with("controller session="), "{}", r.actor);
    }
}
