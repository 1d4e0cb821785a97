//! A hosted operator loaded with a manifest is held to it as a session is: an input of another
//! type on a covered topic is never fed to it, and an output of an undeclared type faults its
//! input (the notice says TYPE_MISMATCH; nothing it emitted is sequenced). A circuit's stage can
//! be served by a hosted operator only when its manifest declares the stage's types — checked
//! when the circuit is applied and when an operator is loaded — and the circuit's edge check
//! applies to hosted outputs too.

mod common;

use arqonbus::config::{OperatorManifestFile, ParamConfig, SchemaConfig};
use arqonbus::operator::OperatorFault;
use arqonbus::proto::circuit::v1::{Circuit, Stage};
use arqonbus::proto::operator::v1::{OperatorLimits, OperatorLoad};
use arqonbus::proto::policy::v1::PolicyBinding;
use arqonbus::proto::v1::{ArqonMessage, ErrorCode, OperatorManifest, SchemaRef};
use arqonbus_client::{Client, Outgoing, Subscription};
use common::guest::operator_wasm;
use common::operator::{next, operator_file, quiet, reality_on_shard};
use common::policy::{controller, CONTROLLER_TOKEN};
use common::{client_on_shard, TestBus};
use prost::Message;

const A: &str = "type.googleapis.com/lab.A";
const B: &str = "type.googleapis.com/lab.B";

fn schema(topic: &str, type_url: &str) -> SchemaConfig {
    SchemaConfig {
        topic: topic.into(),
        type_url: type_url.into(),
    }
}

/// A `sys.control.operator.load` of the echo guest under `name`, bound to `topic_pattern`,
/// emitting on `out`, with `manifest`.
fn load(
    name: &str,
    topic_pattern: &str,
    out: &str,
    manifest: Option<OperatorManifest>,
) -> Outgoing {
    let load = OperatorLoad {
        name: name.into(),
        bindings: vec![PolicyBinding {
            reality_glob: "typed-*".into(),
            topic_pattern: topic_pattern.into(),
        }],
        limits: Some(OperatorLimits::default()),
        wasm: std::fs::read(operator_wasm("echo")).unwrap().into(),
        params: [("topic".to_string(), common::operator::text(out))].into(),
        manifest,
    };
    Outgoing::new("ops", "sys.control.operator.load").message(&load)
}

fn stage(name: &str, operator: &str, input: (&str, &str), output: (&str, &str)) -> Stage {
    Stage {
        name: name.into(),
        operator: operator.into(),
        input_topic: input.0.into(),
        input_type: input.1.into(),
        output_topic: output.0.into(),
        output_type: output.1.into(),
    }
}

async fn publish(client: &Client, reality: &str, topic: &str, type_url: &str) -> u64 {
    client
        .publish_acked(Outgoing::new(reality, topic).payload(type_url, b"v".to_vec()))
        .await
        .unwrap()
        .sequence
}

/// The fault notice right behind the input at `sequence`.
async fn fault_after(sub: &mut Subscription, sequence: u64) -> OperatorFault {
    let input: ArqonMessage = next(sub, 15).await;
    assert_eq!(input.sequence, sequence);
    let notice = next(sub, 15).await;
    assert_eq!(notice.topic, "sys.operator.fault", "{notice:?}");
    assert_eq!(notice.sequence, sequence + 1, "nothing before the notice");
    OperatorFault::decode(&notice.payload.unwrap().value[..]).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosted_operators_keep_their_declared_types() {
    let reality = reality_on_shard("typed", 1, 2);
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_owned();
    let echo = operator_wasm("echo");
    let bus = TestBus::start(move |c| {
        c.data_dir = data_dir;
        c.control.controller_tokens = vec![CONTROLLER_TOKEN.into()];
        // Takes A and B on lab.raw.>, gives A or B on ops.echo.out.
        let mut wide = operator_file("echo", echo.clone(), "typed-*", "lab.raw.>", &[]);
        wide.manifest = Some(OperatorManifestFile {
            inputs: vec![schema("lab.raw.>", A), schema("lab.raw.>", B)],
            outputs: vec![schema("ops.echo.out", A), schema("ops.echo.out", B)],
            ..Default::default()
        });
        // Takes only A on lab.narrow.>.
        let mut narrow = operator_file(
            "narrow",
            echo,
            "typed-*",
            "lab.narrow.>",
            &[("topic", ParamConfig::Text("ops.narrow.out".into()))],
        );
        narrow.manifest = Some(OperatorManifestFile {
            inputs: vec![schema("lab.narrow.>", A)],
            outputs: vec![schema("ops.narrow.out", A)],
            ..Default::default()
        });
        c.operators = vec![wide, narrow];
    });
    let ctl = controller(bus.addr).await;
    let client = client_on_shard(bus.addr, 0).await;
    let mut all = client.subscribe(&reality, ">").await.unwrap();

    // A declared input is fed, and its declared output flows.
    let seq = publish(&client, &reality, "lab.raw.x", A).await;
    assert_eq!(next(&mut all, 15).await.sequence, seq);
    let out = next(&mut all, 15).await;
    assert_eq!(
        (out.topic.as_str(), out.sequence),
        ("ops.echo.out", seq + 1)
    );
    assert_eq!(out.payload.unwrap().type_url, A);

    // An input of a type `narrow` does not take is never fed to it; one it takes is.
    let seq = publish(&client, &reality, "lab.narrow.x", B).await;
    assert_eq!(next(&mut all, 15).await.sequence, seq);
    assert!(quiet(&mut all, 300).await, "narrow was fed a B");
    let seq = publish(&client, &reality, "lab.narrow.x", A).await;
    assert_eq!(next(&mut all, 15).await.sequence, seq);
    assert_eq!(next(&mut all, 15).await.topic, "ops.narrow.out");

    // Loaded at run time declaring B as its output, it emits A: a fault, nothing sequenced.
    let wrong = OperatorManifest {
        output_schemas: vec![SchemaRef {
            topic_pattern: "ops.wrong.out".into(),
            type_url: B.into(),
        }],
        ..Default::default()
    };
    ctl.publish_acked(load(
        "wrongout",
        "lab.wrong.>",
        "ops.wrong.out",
        Some(wrong),
    ))
    .await
    .unwrap();
    let seq = publish(&client, &reality, "lab.wrong.x", A).await;
    let fault = fault_after(&mut all, seq).await;
    assert!(
        fault
            .reason
            .starts_with("TYPE_MISMATCH: topic `ops.wrong.out`")
            && fault.reason.contains("lab.B")
            && fault.reason.contains("carries `type.googleapis.com/lab.A`"),
        "{}",
        fault.reason
    );
    // A manifest naming another operator is refused at load.
    let other = OperatorManifest {
        name: "someone-else".into(),
        ..Default::default()
    };
    let err = ctl
        .publish_acked(load("named", "lab.named.>", "ops.named.out", Some(other)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::InvalidRequest), "{err}");
    assert!(
        err.to_string().contains("must be the operator's name"),
        "{err}"
    );

    // A circuit whose stage `echo` serves: its manifest declares the stage's types.
    let pair = Circuit {
        name: "pair".into(),
        reality_id: reality.clone(),
        stages: vec![
            stage("e", "echo", ("lab.raw.in", A), ("ops.echo.out", A)),
            stage("s", "sinkop", ("ops.echo.out", A), ("", "")),
        ],
    };
    ctl.apply_circuit(&pair).await.unwrap();
    // Its manifest allows B on ops.echo.out, the circuit's edge does not: the hop refuses it.
    let seq = publish(&client, &reality, "lab.raw.x", B).await;
    let fault = fault_after(&mut all, seq).await;
    assert!(
        fault
            .reason
            .starts_with("TYPE_MISMATCH: topic `ops.echo.out` is edge e -> s")
            && fault.reason.contains("circuit `pair`"),
        "{}",
        fault.reason
    );
    // A stage's operator may not be loaded without a manifest while the circuit is installed.
    let err = ctl
        .publish_acked(load("sinkop", "lab.sink.>", "ops.sink.out", None))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::InvalidRequest), "{err}");
    assert!(err.to_string().contains("declares no manifest"), "{err}");

    // Nor may a circuit be applied that a loaded operator without one would serve.
    ctl.publish_acked(load("plain", "lab.plain.>", "ops.plain.out", None))
        .await
        .unwrap();
    let served_by_plain = Circuit {
        name: "plain-pair".into(),
        reality_id: reality.clone(),
        stages: vec![
            stage("p", "plain", ("", ""), ("ops.plain.out", A)),
            stage("q", "sinkop", ("ops.plain.out", A), ("", "")),
        ],
    };
    let err = ctl.apply_circuit(&served_by_plain).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::InvalidRequest), "{err}");
    assert!(
        err.to_string().contains("stage `p`") && err.to_string().contains("declares no manifest"),
        "{err}"
    );
    // Removing the circuit lifts the edge check: the B output flows again.
    ctl.remove_circuit("pair").await.unwrap();
    let seq = publish(&client, &reality, "lab.raw.x", B).await;
    assert_eq!(next(&mut all, 15).await.sequence, seq);
    let out = next(&mut all, 15).await;
    assert_eq!(
        (out.topic.as_str(), out.sequence),
        ("ops.echo.out", seq + 1)
    );
    bus.stop();
}
