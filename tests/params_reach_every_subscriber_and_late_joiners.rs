//! Reality parameters (`sys.control.param.set`) over real sockets: a controller's change reaches
//! every connection subscribed to anything in the reality, on both shards, exactly once and
//! whatever its patterns or filters; versions count per name; a late joiner gets the current
//! values first; `ParamsGet` answers them; the change is in the reality's log (history sees it)
//! and in the audit log. A non-controller's set is refused (and only counted in the audit log); nobody may publish on
//! `sys.param.*` directly; bad names and values are refused.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use arqonbus::config::SyncMode;
use arqonbus::proto::v1::{param, ArqonMessage, ErrorCode, HistoryGet, Param};
use arqonbus_client::{Client, Outgoing, SubscribeOptions, Subscription};
use common::policy::{arqonbus, audit_records, connect_with_token, controller, CONTROLLER_TOKEN};
use common::{client_on_shard, retain, TestBus};
use futures::StreamExt;
use prost::Message;

fn param_of(m: &ArqonMessage) -> Param {
    Param::decode(m.payload.as_ref().expect("payload").value.as_slice()).expect("a Param")
}

async fn next(sub: &mut Subscription) -> ArqonMessage {
    tokio::time::timeout(Duration::from_secs(10), sub.next())
        .await
        .expect("a pulse in time")
        .expect("stream open")
        .expect("no error")
}

/// Nothing more arrives on `sub` within a short wait.
async fn quiet(sub: &mut Subscription) {
    if let Ok(Some(item)) = tokio::time::timeout(Duration::from_millis(300), sub.next()).await {
        panic!("unexpected {item:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn params_reach_every_subscriber_and_late_joiners() {
    let dir = tempfile::tempdir().unwrap();
    let bus = TestBus::start(|c| {
        c.shards = 2;
        retain(c, dir.path(), "lab-*", SyncMode::Os);
        c.control.controller_tokens = vec![CONTROLLER_TOKEN.into()];
        c.limits.max_params_per_reality = 3;
    });
    let ctl = controller(bus.addr).await;

    // Subscribers on both shards, with patterns that do and do not cover sys.param.*, one with a
    // filter no parameter pulse would pass, and one connection with two subscriptions.
    let mut clients: Vec<Client> = Vec::new();
    let mut subs: Vec<Subscription> = Vec::new();
    for (shard, pattern, filter) in [
        (0, "rig.>", ""),
        (1, "rig.>", ""),
        (0, "sys.param.>", ""),
        (1, ">", "coherence > 2"),
    ] {
        let c = client_on_shard(bus.addr, shard).await;
        let options = SubscribeOptions::new().filter(filter);
        subs.push(c.subscribe_with("lab-1", pattern, options).await.unwrap());
        clients.push(c);
    }
    let twice = client_on_shard(bus.addr, 1).await;
    let mut first_of_two = twice.subscribe("lab-1", "rig.a.>").await.unwrap();
    let mut second_of_two = twice.subscribe("lab-1", "rig.b.>").await.unwrap();
    // Another reality's subscriber hears nothing of lab-1's parameters.
    let other = client_on_shard(bus.addr, 0).await;
    let mut elsewhere = other.subscribe("lab-2", ">").await.unwrap();

    let ack = ctl
        .set_param("lab-1", "coupling", param::Value::Number(0.5))
        .await
        .unwrap();
    assert!(ack.sequence > 0, "sequenced into the reality");
    for sub in subs.iter_mut().chain([&mut first_of_two]) {
        let m = next(sub).await;
        assert_eq!(m.topic, "sys.param.coupling");
        assert_eq!(m.sequence, ack.sequence);
        let p = param_of(&m);
        assert_eq!(p.name, "coupling");
        assert_eq!(p.value, Some(param::Value::Number(0.5)));
        assert_eq!(p.version, 1);
        assert!(!p.set_by.is_empty(), "the bus names who set it");
    }
    quiet(&mut second_of_two).await;
    quiet(&mut elsewhere).await;

    // Versions count per name; text and binary values too.
    ctl.set_param("lab-1", "coupling", param::Value::Number(0.7))
        .await
        .unwrap();
    ctl.set_param("lab-1", "mode.label", param::Value::Text("sweep".into()))
        .await
        .unwrap();
    let blob = param::Value::Binary(vec![0, 1, 2, 255].into());
    ctl.set_param("lab-1", "seed", blob.clone()).await.unwrap();
    for sub in subs.iter_mut() {
        let got: Vec<(String, u64)> = [next(sub).await, next(sub).await, next(sub).await]
            .iter()
            .map(|m| (param_of(m).name, param_of(m).version))
            .collect();
        assert_eq!(
            got,
            [
                ("coupling".to_string(), 2),
                ("mode.label".to_string(), 1),
                ("seed".to_string(), 1)
            ]
        );
    }

    // A late joiner gets the current value of each parameter first, in sequence order.
    let late = client_on_shard(bus.addr, 1).await;
    let mut late_sub = late.subscribe("lab-1", "rig.>").await.unwrap();
    let mut current = HashMap::new();
    for _ in 0..3 {
        let p = param_of(&next(&mut late_sub).await);
        current.insert(p.name.clone(), (p.version, p.value));
    }
    assert_eq!(
        current["coupling"],
        (2, Some(param::Value::Number(0.7))),
        "{current:?}"
    );
    assert_eq!(current["seed"], (1, Some(blob.clone())));
    quiet(&mut late_sub).await;

    // ParamsGet answers the same, from either shard.
    for c in [&clients[0], &clients[1]] {
        let params = c.params("lab-1").await.unwrap();
        let by_name: HashMap<String, (u64, u64)> = params
            .params
            .iter()
            .map(|e| {
                let p = e.param.clone().unwrap();
                (p.name, (p.version, e.sequence))
            })
            .collect();
        assert_eq!(by_name.len(), 3);
        assert_eq!(by_name["coupling"].0, 2);
        assert!(by_name["coupling"].1 > ack.sequence);
    }
    assert!(clients[0].params("lab-2").await.unwrap().params.is_empty());

    // The bound on parameters per reality; bad names and values; non-controllers.
    let full = ctl
        .set_param("lab-1", "fourth", param::Value::Number(1.0))
        .await
        .unwrap_err();
    assert_eq!(full.code(), Some(ErrorCode::LimitExceeded), "{full}");
    for (name, value) in [
        ("Bad Name", param::Value::Number(1.0)),
        ("x", param::Value::Number(f64::INFINITY)),
    ] {
        let err = ctl.set_param("lab-1", name, value).await.unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::InvalidRequest), "{err}");
    }
    let anonymous = connect_with_token(bus.addr, "").await;
    let refused = anonymous
        .set_param("lab-1", "coupling", param::Value::Number(9.0))
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        Some(ErrorCode::PermissionDenied),
        "{refused}"
    );
    let direct = anonymous
        .publish_acked(Outgoing::new("lab-1", "sys.param.coupling").bytes(b"9".to_vec()))
        .await
        .unwrap_err();
    assert_eq!(direct.code(), Some(ErrorCode::PermissionDenied), "{direct}");
    quiet(&mut subs[0]).await;

    // The changes are in the reality's log, where a replay sees them.
    let (history, _) = clients[0]
        .history(HistoryGet {
            reality_id: "lab-1".into(),
            pattern: "sys.param.>".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .collect_all()
        .await
        .unwrap();
    let logged: Vec<(String, u64)> = history
        .iter()
        .map(|m| (param_of(m).name, param_of(m).version))
        .collect();
    assert_eq!(logged.len(), 4, "{logged:?}");
    assert_eq!(logged[0], ("coupling".into(), 1));
    assert_eq!(bus.metrics().params_set, 4);

    // The CLI sets and reads them.
    let server = bus.addr.to_string();
    let cli = |args: &[&str]| {
        let mut all = vec!["param", "--server", &server, "--reality", "lab-3"];
        all.extend_from_slice(args);
        let out = arqonbus(&all);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        (
            out.status.success(),
            text,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, _, err) = cli(&["--token", CONTROLLER_TOKEN, "set", "gain=2.5"]);
    assert!(ok, "{err}");
    let (ok, _, err) = cli(&["--token", CONTROLLER_TOKEN, "set", "--text", "label=7"]);
    assert!(ok, "{err}");
    let (ok, _, err) = cli(&["set", "gain=3"]);
    assert!(!ok && err.contains("PermissionDenied"), "{err}");
    let (ok, out, err) = cli(&["get", "--json"]);
    assert!(ok, "{err}");
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert_eq!(lines[0]["name"], "gain");
    assert_eq!(lines[0]["value"], 2.5);
    assert_eq!(lines[1]["value"], "7");
    bus.stop();

    let records = audit_records(dir.path());
    let sets: Vec<_> = records
        .iter()
        .filter(|r| r.action == "sys.control.param.set")
        .collect();
    // 4 + 2 (CLI) applied; the full reality is refused by the owner after the audit (the change
    // was allowed, the reality could not take it); 2 invalid are refused.
    assert_eq!(sets.len(), 9, "{sets:#?}");
    let refused: Vec<_> = sets
        .iter()
        .filter(|r| r.details["outcome"] == "refused")
        .collect();
    assert_eq!(refused.len(), 2, "{refused:#?}");
    // The 2 pulses of the non-controller are refused before the audit log, which only counts
    // them.
    let non_controllers: u64 = records
        .iter()
        .filter(|r| r.action == "control.non_controller_refusals")
        .map(|r| r.details["refused"].as_u64().unwrap())
        .sum();
    assert_eq!(non_controllers, 2);
}
