//! Typed circuits over real sockets (US-02): the example circuit checks offline; a circuit with
//! a type error is refused before any pulse flows, naming the edge, both stages and both types;
//! the five-stage circuit runs end to end with stand-in operators (sessions with manifests),
//! pending until every stage is online; a pulse of the wrong type on an edge is refused with
//! TYPE_MISMATCH and counted on that edge while the others go on; an operator whose new manifest
//! breaks an edge is refused at Hello.

mod common;

use std::time::Duration;

use arqonbus::circuit::CircuitFile;
use arqonbus::proto::v1::{ErrorCode, OperatorManifest, SchemaRef};
use arqonbus_client::{Client, ClientError, ConnectOptions, Outgoing};
use common::policy::{arqonbus, CONTROLLER_TOKEN};
use common::{client, TestBus};
use futures::StreamExt;

const HYBRID: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/circuits/hybrid.toml");
const FRAMES: u64 = 200;

fn manifest_of(stage: &arqonbus::proto::circuit::v1::Stage) -> OperatorManifest {
    let schema = |topic: &str, type_url: &str| {
        (!topic.is_empty()).then(|| SchemaRef {
            topic_pattern: topic.into(),
            type_url: type_url.into(),
        })
    };
    OperatorManifest {
        name: stage.operator.clone(),
        version: "1".into(),
        capabilities: vec![],
        input_schemas: schema(&stage.input_topic, &stage.input_type)
            .into_iter()
            .collect(),
        output_schemas: schema(&stage.output_topic, &stage.output_type)
            .into_iter()
            .collect(),
        ..Default::default()
    }
}

async fn operator(addr: std::net::SocketAddr, m: OperatorManifest) -> Result<Client, ClientError> {
    Client::connect(
        addr,
        ConnectOptions {
            manifest: Some(m),
            ..ConnectOptions::default()
        },
    )
    .await
}

fn cli(args: &[&str]) -> (bool, String) {
    let out = arqonbus(args);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn status(admin: &str) -> serde_json::Value {
    let (ok, text) = cli(&["circuit", "--admin", admin, "status", "hybrid", "--json"]);
    assert!(ok, "{text}");
    serde_json::from_str(text.trim()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn circuit_types_are_checked_before_and_at_every_hop() {
    // Offline: the example checks; a copy with one wrong type does not.
    let (ok, text) = cli(&["circuit", "check", HYBRID]);
    assert!(ok && text.contains("4 edges, types agree"), "{text}");
    let dir = tempfile::tempdir().unwrap();
    let broken_path = dir.path().join("broken.toml");
    let broken = std::fs::read_to_string(HYBRID).unwrap().replacen(
        "input = { topic = \"audio.features.vector\", type = \"type.googleapis.com/arqon.demo.Features\" }",
        "input = { topic = \"audio.features.vector\", type = \"type.googleapis.com/arqon.demo.Spectrum\" }",
        1,
    );
    std::fs::write(&broken_path, broken).unwrap();
    let broken_file = broken_path.to_str().unwrap();
    let (ok, text) = cli(&["circuit", "check", broken_file]);
    assert!(!ok, "{text}");
    assert!(
        text.contains("edge `audio.features.vector` (features -> qml)")
            && text.contains("arqon.demo.Features")
            && text.contains("arqon.demo.Spectrum"),
        "{text}"
    );

    let data_dir = dir.path().join("data");
    let bus = TestBus::start(move |c| {
        c.shards = 2;
        c.data_dir = data_dir;
        c.control.controller_tokens = vec![CONTROLLER_TOKEN.into()];
    });
    let server = bus.addr.to_string();
    let admin = bus.admin_addr().to_string();
    // The bus refuses the broken circuit too.
    let (ok, text) = cli(&[
        "circuit",
        "--server",
        &server,
        "--token",
        CONTROLLER_TOKEN,
        "apply",
        broken_file,
    ]);
    assert!(!ok && text.contains("features -> qml"), "{text}");
    let (ok, text) = cli(&[
        "circuit",
        "--server",
        &server,
        "--token",
        CONTROLLER_TOKEN,
        "apply",
        HYBRID,
    ]);
    assert!(ok, "{text}");
    let s = status(&admin);
    assert_eq!(s["live"], false, "no stage is online yet");

    // Stand-ins: every stage but the source forwards its input to its output.
    let circuit = CircuitFile::parse(&std::fs::read_to_string(HYBRID).unwrap()).unwrap();
    let reality = circuit.reality_id.clone();
    let mut stages = Vec::new();
    for stage in &circuit.stages {
        stages.push(operator(bus.addr, manifest_of(stage)).await.unwrap());
    }
    assert_eq!(status(&admin)["live"], true);
    let watcher = client(bus.addr).await;
    let mut labels = watcher
        .subscribe(&reality, "audio.class.label")
        .await
        .unwrap();
    let mut forwarders = Vec::new();
    for (stage, c) in circuit.stages.iter().zip(&stages).skip(1) {
        let mut input = c.subscribe(&reality, &stage.input_topic).await.unwrap();
        let (c, stage, reality) = (c.clone(), stage.clone(), reality.clone());
        forwarders.push(tokio::spawn(async move {
            while let Some(Ok(m)) = input.next().await {
                let value = m.payload.unwrap().value;
                c.publish(
                    Outgoing::new(&reality, &stage.output_topic).payload(&stage.output_type, value),
                )
                .await
                .unwrap();
            }
        }));
    }
    let source = &circuit.stages[0];
    for i in 0..FRAMES {
        stages[0]
            .publish_acked(
                Outgoing::new(&reality, &source.output_topic)
                    .payload(&source.output_type, i.to_be_bytes().to_vec()),
            )
            .await
            .unwrap();
    }
    for i in 0..FRAMES {
        let m = tokio::time::timeout(Duration::from_secs(20), labels.next())
            .await
            .expect("labels come out of the last stage")
            .unwrap()
            .unwrap();
        let p = m.payload.unwrap();
        assert_eq!(p.type_url, "type.googleapis.com/arqon.demo.Label");
        assert_eq!(p.value, i.to_be_bytes(), "in order, end to end");
    }

    // A pulse of another type on an edge is refused at the hop and counted there.
    let rogue = client(bus.addr).await;
    let err = rogue
        .publish_acked(
            Outgoing::new(&reality, "audio.bowl.modes")
                .payload("type.googleapis.com/arqon.demo.Audio", b"x".to_vec()),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::TypeMismatch), "{err}");
    assert!(err.to_string().contains("bowlnet -> features"), "{err}");
    // The same topic in another reality is not the circuit's.
    rogue
        .publish_acked(
            Outgoing::new("lab-other", "audio.bowl.modes")
                .payload("type.googleapis.com/arqon.demo.Audio", b"x".to_vec()),
        )
        .await
        .unwrap();
    let s = status(&admin);
    let edge = |topic: &str| {
        s["edges"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["topic"] == topic)
            .unwrap()
            .clone()
    };
    assert_eq!(edge("audio.bowl.modes")["refusals"], 1);
    assert_eq!(edge("audio.raw.frames")["pulses"], FRAMES);
    assert_eq!(edge("audio.qml.state")["pulses"], FRAMES);
    assert_eq!(edge("audio.raw.frames")["refusals"], 0);
    // Every hop's latency was measured, once per pulse written to its consuming stage.
    for e in s["edges"].as_array().unwrap() {
        let l = &e["latency"];
        assert_eq!(l["deliveries"], FRAMES, "{e}");
        let (p50, p99) = (l["p50_us_at_most"].as_f64(), l["p99_us_at_most"].as_f64());
        assert!(p50.is_some_and(|p| p > 0.0) && p99 >= p50, "{e}");
        assert!(l["mean_us"].as_f64().is_some_and(|m| m > 0.0), "{e}");
    }
    let (ok, text) = cli(&["circuit", "--admin", &admin, "status", "hybrid"]);
    assert!(ok && text.contains("hop p50 <="), "{text}");
    // The circuit goes on.
    stages[0]
        .publish_acked(
            Outgoing::new(&reality, &source.output_topic)
                .payload(&source.output_type, FRAMES.to_be_bytes().to_vec()),
        )
        .await
        .unwrap();
    let m = tokio::time::timeout(Duration::from_secs(20), labels.next())
        .await
        .expect("still flowing")
        .unwrap()
        .unwrap();
    assert_eq!(m.payload.unwrap().value, FRAMES.to_be_bytes());

    // An operator whose new manifest breaks an edge is refused at Hello, with the reason.
    let mut switched = manifest_of(&circuit.stages[2]);
    switched.output_schemas[0].type_url = "type.googleapis.com/arqon.demo.FeaturesV2".into();
    let err = operator(bus.addr, switched).await.err().expect("refused");
    assert_eq!(err.code(), Some(ErrorCode::TypeMismatch), "{err}");
    assert!(
        err.to_string().contains("stage `features`") && err.to_string().contains("FeaturesV2"),
        "{err}"
    );
    // Removing the circuit lifts its checks.
    let (ok, text) = cli(&[
        "circuit",
        "--server",
        &server,
        "--token",
        CONTROLLER_TOKEN,
        "remove",
        "hybrid",
    ]);
    assert!(ok, "{text}");
    rogue
        .publish_acked(
            Outgoing::new(&reality, "audio.bowl.modes")
                .payload("type.googleapis.com/arqon.demo.Audio", b"x".to_vec()),
        )
        .await
        .unwrap();
    for f in forwarders {
        f.abort();
    }
    bus.stop();
}
