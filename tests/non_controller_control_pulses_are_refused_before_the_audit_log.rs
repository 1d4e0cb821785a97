//! `sys.control.*` from a session that is not a controller (no token, or a wrong one) is refused
//! with PERMISSION_DENIED and changes nothing, before anything is written: a flood of such
//! pulses, carrying client strings of frame size, costs the audit log at most one bounded record
//! per shard per window (plus what is left at shutdown), is counted, and is paced per connection.

mod common;

use std::time::{Duration, Instant};

use arqonbus::proto::policy::v1::PolicyLimits;
use arqonbus::proto::v1::ErrorCode;
use arqonbus_client::{Client, ConnectOptions, Outgoing};
use common::policy::{
    audit_records, connect_with_token, controller, fixture, unload, Load, CONTROLLER_TOKEN,
};
use common::TestBus;

const NON_CONTROLLER_ACTION: &str = "control.non_controller_refusals";
const FLOOD: u64 = 1000;

fn deny_all() -> Load<'static> {
    Load {
        name: "lockdown",
        wasm: std::fs::read(fixture("deny_all")).unwrap(),
        reality_glob: "*",
        topic_pattern: ">",
        params: vec![],
        limits: PolicyLimits::default(),
    }
}

fn audit_bytes(dir: &std::path::Path) -> u64 {
    std::fs::metadata(dir.join(arqonbus::audit::FILE_NAME)).map_or(0, |m| m.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_controller_control_pulses_are_refused_before_the_audit_log() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_owned();
    let bus = TestBus::start(move |c| {
        c.data_dir = data_dir;
        c.control.controller_tokens = vec![CONTROLLER_TOKEN.into()];
        // This test is about the audit log, not the pacing (the next test).
        c.control.non_controller_pulses_per_sec = 1_000_000;
    });
    let deny_all = deny_all();
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

    // A flood from one anonymous session with a client name and producer ids of many KiB.
    let flooder = Client::connect(
        bus.addr,
        ConnectOptions {
            client_name: "n".repeat(4096),
            ..ConnectOptions::default()
        },
    )
    .await
    .unwrap();
    let before = audit_bytes(dir.path());
    let producer = "p".repeat(16 << 10);
    for _ in 0..FLOOD {
        let err = flooder
            .publish_acked(deny_all.pulse("ops").producer(&producer))
            .await
            .expect_err("refused");
        assert_eq!(err.code(), Some(ErrorCode::PermissionDenied), "{err}");
    }
    let during_flood = audit_bytes(dir.path()) - before;
    println!("{FLOOD} anonymous control pulses: the audit log grew by {during_flood} bytes");
    // At most the first refusal on the flooder's shard (the others' shard may have had its own).
    assert!(
        during_flood < 2048,
        "{during_flood} bytes for {FLOOD} refusals"
    );

    // The same request from a controller is applied, and audited one record each.
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

    let refused = 4 + FLOOD;
    let m = bus.metrics();
    assert_eq!(m.control_pulses, refused + 2);
    assert_eq!(m.control_refusals, refused);
    assert_eq!(m.control_non_controller_refusals, refused);
    bus.stop();

    let records = audit_records(dir.path());
    let (gathered, applied): (Vec<_>, Vec<_>) = records
        .iter()
        .partition(|r| r.action == NON_CONTROLLER_ACTION);
    // Two shards: each records its first refusal at once and what is left at shutdown.
    assert!(gathered.len() <= 4, "{gathered:#?}");
    let counted: u64 = gathered
        .iter()
        .map(|r| r.details["refused"].as_u64().unwrap())
        .sum();
    assert_eq!(counted, refused, "every refusal is counted in some record");
    for r in &gathered {
        assert_eq!(r.details["outcome"], "refused");
        assert!(r.details["reason"]
            .as_str()
            .unwrap()
            .contains("only from controllers"));
        assert_eq!(r.details["peers"][0], "127.0.0.1");
        assert!(r.details["topics"].as_array().unwrap().len() <= 2, "{r:#?}");
        let line = serde_json::to_string(r).unwrap();
        assert!(line.len() < 2048, "a record stays small: {line}");
    }
    assert_eq!(applied.len(), 2, "{applied:#?}");
    for r in &applied {
        assert_eq!(r.details["outcome"], "applied");
        assert!(r.actor.starts_with("controller session="), "{}", r.actor);
    }
    assert_eq!(applied[0].action, "sys.control.policy.load");
    assert_eq!(applied[1].action, "sys.control.policy.unload");
    println!(
        "audit log after the test: {} bytes, {} records",
        audit_bytes(dir.path()),
        records.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_flooding_control_pulses_is_paced() {
    let bus = TestBus::start(|c| c.control.non_controller_pulses_per_sec = 20);
    let anonymous = connect_with_token(bus.addr, "").await;
    let start = Instant::now();
    // A burst of 20, then 20 a second: 60 pulses take about two seconds.
    for _ in 0..60 {
        let err = anonymous
            .publish_acked(Outgoing::new("ops", "sys.control.policy.unload"))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::PermissionDenied), "{err}");
    }
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(1700), "{took:?}");
    assert!(took < Duration::from_secs(10), "{took:?}");
    // Other connections are not held up by it.
    let other = connect_with_token(bus.addr, "").await;
    let start = Instant::now();
    other
        .publish_acked(Outgoing::new("lab-1", "lab.rig.go").bytes(b"x".to_vec()))
        .await
        .unwrap();
    assert!(start.elapsed() < Duration::from_millis(500));
}
