//! Record 100,000 inputs through the Kuramoto operator (with a parameter change half way), then:
//! replaying with the recording's configuration reproduces it bit for bit, three times in this
//! process and in two `arqonbus replay` processes (the same SHA-256 every time); replaying with
//! the change pinned away diverges right after the change; a fork with another `k_c` diverges
//! from the fork point, the report names that sequence, and the same fork twice is identical.

mod common;

use std::path::Path;

use arqonbus::config::Config;
use arqonbus::operator::Param;
use arqonbus::proto::sim::v1::KuramotoState;
use arqonbus::replay::{self, Options, Pin, Range};
use arqonbus::Server;
use arqonbus_client::Outgoing;
use common::guest::operator_wasm;
use common::operator::param_pulse;
use common::policy::{arqonbus, controller, CONTROLLER_TOKEN};
use prost::Message;

const INPUTS: u64 = 100_000;
const REALITY: &str = "sim-lab";

fn write_config(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("arqonbus.toml");
    let text = format!(
        r#"listen = "127.0.0.1:0"
admin_listen = "off"
shards = 2
data_dir = {data:?}

[control]
controller_tokens = [{token:?}]

[[retention]]
realities = "sim-*"
sync = "os"

[[operators]]
name = "kuramoto"
wasm_path = {wasm:?}
bindings = [{{ reality_glob = "sim-*", topic_pattern = "sim.kuramoto.tick" }}]
params = {{ k_c = 1.0, oscillators = 16, dt = 0.05, seed = 7 }}
"#,
        data = dir.join("data"),
        token = CONTROLLER_TOKEN,
        wasm = operator_wasm("kuramoto"),
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn options(dir: &Path) -> Options {
    Options {
        data_dir: dir.join("data"),
        reality: REALITY.into(),
        range: Range::default(),
        pins: vec![],
        fork_at: None,
        out: None,
        recorded_out: None,
        keep_bytes: None,
    }
}

/// Publishes the inputs, with `k_c = 2.0` set by a controller after half of them. Returns the
/// sequence of the parameter change.
async fn record(config: &Config) -> u64 {
    let server = Server::start(config.clone()).expect("server starts");
    let addr = server.local_addr();
    let ctl = controller(addr).await;
    let publisher = common::client(addr).await;
    let mut change = 0;
    for i in 0..INPUTS {
        if i == INPUTS / 2 {
            publisher.flush().await.unwrap();
            let ack = publisher
                .publish_acked(Outgoing::new(REALITY, "sim.kuramoto.tick").bytes("tick"))
                .await
                .unwrap();
            let set = ctl
                .publish_acked(param_pulse(REALITY, "kuramoto", "k_c", 2.0))
                .await
                .expect("a controller may tune an operator");
            assert_eq!(
                set.sequence,
                ack.sequence + 2,
                "behind the last input and its output"
            );
            change = set.sequence;
            continue;
        }
        publisher
            .publish(Outgoing::new(REALITY, "sim.kuramoto.tick").bytes("tick"))
            .await
            .unwrap();
    }
    let last = publisher
        .publish_acked(Outgoing::new(REALITY, "sim.kuramoto.tick").bytes("last"))
        .await
        .unwrap();
    // INPUTS + 1 inputs, each with one output behind it, and the parameter change.
    assert_eq!(last.sequence, 2 * INPUTS + 2);
    assert_eq!(server.metrics().operator_faults, 0);
    server.stop().expect("clean stop");
    change
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_is_bit_exact_and_forks_diverge() {
    let dir = tempfile::tempdir().unwrap();
    let config_path = write_config(dir.path());
    let config = Config::from_file(&config_path).unwrap();
    let change = record(&config).await;

    // The recording holds the change at its position, and the operator used it from there on.
    let log = replay::read_reality(&dir.path().join("data"), REALITY).unwrap();
    assert_eq!(log.len() as u64, 2 * INPUTS + 3);
    let at = &log[(change - 1) as usize];
    assert_eq!(at.topic, "sys.operator.param");
    let state = |m: &arqonbus::proto::v1::ArqonMessage| {
        KuramotoState::decode(&m.payload.as_ref().unwrap().value[..]).unwrap()
    };
    assert_eq!(state(&log[(change - 2) as usize]).coupling, 1.0);
    assert_eq!(state(&log[change as usize + 1]).coupling, 2.0);

    // Three replays here, two in other processes: one SHA-256, the recording's.
    let mut hashes = Vec::new();
    for _ in 0..3 {
        let r = replay::replay(&config, &options(dir.path())).unwrap();
        assert!(r.identical, "{r:?}");
        assert_eq!(r.inputs, INPUTS + 2);
        assert_eq!(r.records, 2 * INPUTS + 3);
        assert_eq!(r.sha256, r.recorded_sha256);
        hashes.push(r.sha256);
    }
    let data = dir.path().join("data");
    for _ in 0..2 {
        let out = arqonbus(&[
            "replay",
            "--data-dir",
            data.to_str().unwrap(),
            "--reality",
            REALITY,
            "--config",
            config_path.to_str().unwrap(),
            "--json",
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(report["identical"], true);
        hashes.push(report["sha256"].as_str().unwrap().to_owned());
    }
    assert!(hashes.iter().all(|h| *h == hashes[0]), "{hashes:?}");

    // Pinning k_c to its first value ignores the recorded change: the first output computed
    // after the change is the first difference.
    let mut no_change = options(dir.path());
    no_change.pins = vec![Pin {
        operator: "kuramoto".into(),
        name: "k_c".into(),
        value: Param::Number(1.0),
    }];
    let r = replay::replay(&config, &no_change).unwrap();
    let d = r.first_divergence.expect("diverges");
    assert_eq!(d.a_sequence, Some(change + 2), "{d:?}");
    assert!(
        d.fields.iter().any(|f| f.field == "spectral.coherence"),
        "{d:?}"
    );

    // A fork from the middle of the first half with a weaker coupling.
    let fork_at = INPUTS / 4 * 2 + 1; // an input: odd sequences are inputs before the change
    assert!(log[(fork_at - 1) as usize].emitted_by.is_empty());
    let fork = |out: &str| {
        let mut o = options(dir.path());
        o.fork_at = Some(fork_at);
        o.pins = vec!["kuramoto.k_c=0.3".parse().unwrap()];
        o.out = Some(dir.path().join(out));
        o.recorded_out = Some(dir.path().join("recorded.log"));
        replay::replay(&config, &o).unwrap()
    };
    let (f1, f2) = (fork("fork1.log"), fork("fork2.log"));
    assert_eq!(f1.sha256, f2.sha256, "the same fork twice is the same fork");
    assert_ne!(f1.sha256, f1.recorded_sha256);
    let d = f1.first_divergence.clone().expect("the fork diverges");
    assert_eq!(
        d.a_sequence,
        Some(fork_at + 1),
        "the fork point's output differs first"
    );

    // `arqonbus diff` names the same place and plots coherence for both.
    let svg = dir.path().join("coherence.svg");
    let out = arqonbus(&[
        "diff",
        dir.path().join("recorded.log").to_str().unwrap(),
        dir.path().join("fork1.log").to_str().unwrap(),
        "--svg",
        svg.to_str().unwrap(),
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["divergences"][0]["a_sequence"], fork_at + 1);
    assert!(report["differing"].as_u64().unwrap() > INPUTS / 2);
    let plot = std::fs::read_to_string(&svg).unwrap();
    assert!(plot.contains(&format!("first divergence #{}", fork_at + 1)));
    // Weakly coupled oscillators drift apart: the fork's coherence ends lower.
    let recorded = replay::read_log(&dir.path().join("recorded.log")).unwrap();
    let forked = replay::read_log(&dir.path().join("fork1.log")).unwrap();
    let late = |log: &[arqonbus::proto::v1::ArqonMessage]| {
        let tail: Vec<f64> = log[log.len() - 2000..]
            .iter()
            .filter(|m| !m.emitted_by.is_empty())
            .map(|m| m.spectral.as_ref().unwrap().coherence)
            .collect();
        tail.iter().sum::<f64>() / tail.len() as f64
    };
    assert!(
        late(&forked) < late(&recorded),
        "{} vs {}",
        late(&forked),
        late(&recorded)
    );
}
