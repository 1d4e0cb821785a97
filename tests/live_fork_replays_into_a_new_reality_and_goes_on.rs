//! A controller forks a recorded Kuramoto reality on the live bus with another `k_c`: the new
//! reality `R~weak` holds exactly what the offline replay of the same fork produces (renamed),
//! is readable with history, diverges from R right at the fork point, and stays live — a new tick
//! published into it is answered by the operator from the replayed state with the pinned
//! coupling. Refusals: a non-controller, an unretained source, a fork name taken twice.

mod common;

use arqonbus::config::{Config, ParamConfig, SyncMode};
use arqonbus::proto::operator::v1::RealityFork;
use arqonbus::proto::sim::v1::KuramotoState;
use arqonbus::proto::v1::{history_get, ErrorCode};
use arqonbus::replay::{self, Options, Range};
use arqonbus_client::Outgoing;
use common::guest::operator_wasm;
use common::operator::{number, operator_file};
use common::policy::{controller, CONTROLLER_TOKEN};
use common::{client_on_shard, history_query, retain, TestBus};
use prost::Message;

const TICKS: u64 = 2_000;
const FORK_AT: u64 = 1_001; // an input (inputs are odd: one output behind each)

fn fork_pulse(reality: &str, name: &str) -> Outgoing {
    let fork = RealityFork {
        name: name.into(),
        from_sequence: FORK_AT,
        params: [("kuramoto.k_c".to_string(), number(0.2))].into(),
    };
    Outgoing::new(reality, "sys.control.reality.fork").message(&fork)
}

fn coupling(m: &arqonbus::proto::v1::ArqonMessage) -> f64 {
    KuramotoState::decode(&m.payload.as_ref().unwrap().value[..])
        .unwrap()
        .coupling
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_fork_replays_into_a_new_reality_and_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_owned();
    let wasm = operator_wasm("kuramoto");
    let configure = move |c: &mut Config| {
        retain(c, &data_dir, "sim-*", SyncMode::Os);
        c.control.controller_tokens = vec![CONTROLLER_TOKEN.into()];
        c.operators = vec![operator_file(
            "kuramoto",
            wasm.clone(),
            "sim-*",
            "sim.kuramoto.tick",
            &[
                ("k_c", ParamConfig::Number(1.5)),
                ("seed", ParamConfig::Number(5.0)),
            ],
        )];
    };
    let mut config = Config::default();
    configure(&mut config);
    let bus = TestBus::start(configure);
    let ctl = controller(bus.addr).await;
    let client = client_on_shard(bus.addr, 0).await;
    for _ in 0..TICKS {
        client
            .publish(Outgoing::new("sim-lab", "sim.kuramoto.tick").bytes("tick"))
            .await
            .unwrap();
    }
    client.flush().await.unwrap();
    let last = client
        .publish_acked(Outgoing::new("sim-lab", "sim.kuramoto.tick").bytes("tick"))
        .await
        .unwrap();
    assert_eq!(last.sequence, 2 * TICKS + 1);

    // Refusals first: not a controller; a reality that is not retained.
    let err = client
        .publish_acked(fork_pulse("sim-lab", "weak"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::PermissionDenied), "{err}");
    let err = ctl
        .publish_acked(fork_pulse("scratch", "weak"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::InvalidRequest), "{err}");
    assert!(err.to_string().contains("not retained"), "{err}");

    let ack = ctl
        .publish_acked(fork_pulse("sim-lab", "weak"))
        .await
        .expect("the controller forks the reality");
    assert_eq!(ack.reality_id, "sim-lab~weak");
    assert_eq!(
        ack.sequence,
        last.sequence + 1,
        "the same number of records"
    );
    let err = ctl
        .publish_acked(fork_pulse("sim-lab", "weak"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("already exists"), "{err}");

    // The fork, read back with history, is the offline fork renamed.
    let (forked, end) = client
        .history(history_query("sim-lab~weak", None, None, 0))
        .await
        .unwrap()
        .collect_all()
        .await
        .unwrap();
    assert_eq!(end.count, ack.sequence);
    let offline = {
        let o = Options {
            data_dir: dir.path().to_owned(),
            reality: "sim-lab".into(),
            range: Range::default(),
            pins: vec!["kuramoto.k_c=0.2".parse().unwrap()],
            fork_at: Some(FORK_AT),
            out: None,
            recorded_out: None,
            keep_bytes: Some(1 << 30),
        };
        replay::replay_kept(&config, &o).unwrap().1
    };
    assert_eq!(offline.len(), forked.len());
    for (a, b) in offline.iter().zip(&forked) {
        let a = arqonbus::proto::v1::ArqonMessage::decode(&a[..]).unwrap();
        assert_eq!(
            (a.sequence, &a.topic, &a.spectral),
            (b.sequence, &b.topic, &b.spectral)
        );
        assert_eq!(b.reality_id, "sim-lab~weak");
        assert_eq!(b.causal["sim-lab~weak"], b.sequence);
    }
    let (recorded, _) = client
        .history(history_query(
            "sim-lab",
            Some(history_get::From::FromSequence(1)),
            None,
            0,
        ))
        .await
        .unwrap()
        .collect_all()
        .await
        .unwrap();
    let first_diff = recorded
        .iter()
        .zip(&forked)
        .find(|(a, b)| a.spectral != b.spectral)
        .map(|(a, _)| a.sequence);
    assert_eq!(
        first_diff,
        Some(FORK_AT + 1),
        "the fork point's output differs first"
    );
    assert_eq!(coupling(&forked[(FORK_AT - 1) as usize - 1]), 1.5);
    assert_eq!(coupling(&forked[FORK_AT as usize]), 0.2);

    // Live afterwards: the operator goes on from the replayed state, with the pinned k_c.
    let mut live = client
        .subscribe("sim-lab~weak", "sim.kuramoto.state")
        .await
        .unwrap();
    let tick = client
        .publish_acked(Outgoing::new("sim-lab~weak", "sim.kuramoto.tick").bytes("tick"))
        .await
        .unwrap();
    assert_eq!(tick.sequence, ack.sequence + 1);
    let next = common::operator::next(&mut live, 10).await;
    assert_eq!(next.sequence, tick.sequence + 1);
    assert_eq!(coupling(&next), 0.2);
    let step = KuramotoState::decode(&next.payload.unwrap().value[..])
        .unwrap()
        .step;
    assert_eq!(
        step,
        TICKS + 2,
        "the replayed simulation took one more step"
    );

    // And the offline diff reads both realities from the data directory.
    let out = common::policy::arqonbus(&[
        "diff",
        "--data-dir",
        dir.path().to_str().unwrap(),
        "sim-lab",
        "sim-lab~weak",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["divergences"][0]["a_sequence"], FORK_AT + 1);
}
