//! A hosted operator (`echo`, two copies per input) on both shards: every input is followed, in
//! its reality's sequence, by exactly its outputs, which carry the operator's name, the input's
//! sequence, trace and causal context and timestamp, and a deterministic id; the next client
//! pulse comes after them. Clients cannot write the operator topics or forge `emitted_by`.

mod common;

use std::collections::HashMap;

use arqonbus::config::ParamConfig;
use arqonbus::proto::v1::ErrorCode;
use arqonbus_client::Outgoing;
use common::guest::operator_wasm;
use common::operator::{next, operator_file, quiet, reality_on_shard};
use common::{client_on_shard, TestBus};

const INPUTS: u64 = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_outputs_are_sequenced_behind_their_input() {
    let echo = operator_wasm("echo");
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_owned();
    let bus = TestBus::start(move |c| {
        c.data_dir = data_dir;
        c.operators = vec![operator_file(
            "echo",
            echo,
            "ops-*",
            "ops.in.>",
            &[("copies", ParamConfig::Number(2.0))],
        )];
    });
    for owner in 0..2 {
        let reality = reality_on_shard("ops", owner, 2);
        // The publisher sits on the other shard: inputs cross a ring, outputs are local.
        let publisher = client_on_shard(bus.addr, 1 - owner as u32).await;
        let watcher = client_on_shard(bus.addr, owner as u32).await;
        let mut all = watcher.subscribe(&reality, ">").await.unwrap();
        let first = all.next_sequence();
        for i in 0..INPUTS {
            let trace = HashMap::from([("traceparent".to_string(), format!("00-{i:032x}-01"))]);
            let ack = publisher
                .publish_acked(
                    Outgoing::new(&reality, "ops.in.reading")
                        .bytes(format!("reading {i}"))
                        .trace_context(trace),
                )
                .await
                .unwrap();
            assert_eq!(
                ack.sequence,
                first + 3 * i,
                "two outputs sit behind each input"
            );
        }
        for i in 0..INPUTS {
            let input = next(&mut all, 10).await;
            assert_eq!(input.sequence, first + 3 * i);
            assert!(input.emitted_by.is_empty());
            for copy in 0..2 {
                let out = next(&mut all, 10).await;
                assert_eq!(out.sequence, input.sequence + 1 + copy);
                assert_eq!(out.topic, "ops.echo.out");
                assert_eq!(out.emitted_by, "echo");
                assert_eq!(out.producer_id, "echo");
                assert_eq!(out.input_sequence, input.sequence);
                assert_eq!(out.reality_id, reality);
                assert_eq!(out.timestamp_unix_nanos, input.timestamp_unix_nanos);
                assert_eq!(out.trace_context, input.trace_context);
                assert_eq!(out.causal[&reality], out.sequence);
                assert_eq!(out.payload, input.payload);
                let spectral = out.spectral.unwrap();
                assert_eq!(spectral.coherence, input.sequence as f64);
                assert_eq!(spectral.criticality, copy as f64);
                let id = uuid::Uuid::parse_str(&out.id).unwrap();
                assert_eq!(id.get_version_num(), 7);
                assert_eq!(
                    out.id,
                    arqonbus::operator::output_id(&reality, out.sequence, out.timestamp_unix_nanos)
                );
            }
        }
        // Topics outside the binding are not operated on.
        publisher
            .publish_acked(Outgoing::new(&reality, "ops.other.reading").bytes("x"))
            .await
            .unwrap();
        let other = next(&mut all, 10).await;
        assert_eq!(other.topic, "ops.other.reading");
        assert!(quiet(&mut all, 300).await, "no output for an unbound topic");
    }
    let m = bus.metrics();
    assert_eq!(m.operator_calls, 2 * INPUTS);
    assert_eq!(m.operator_emitted, 4 * INPUTS);
    assert_eq!(m.operator_faults, 0);
    assert_eq!(m.operator_instantiations, 2, "one instance per reality");

    // /operators and `arqonbus operator list` show what is loaded.
    let (status, body) = common::http_get(bus.admin_addr(), "/operators").unwrap();
    assert_eq!(status, 200);
    let listed: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(listed[0]["name"], "echo");
    assert_eq!(listed[0]["spec"]["params"]["copies"], 2.0);
    let admin = bus.admin_addr().to_string();
    let out = common::policy::arqonbus(&["operator", "list", "--admin", &admin]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("echo ") && text.contains("ops-*:ops.in.>"),
        "{text}"
    );

    // /metrics has a series per operator, merged over the shards (republished once a second).
    let wanted = [
        format!(
            "arqonbus_hosted_operator_calls_total{{operator=\"echo\"}} {}",
            2 * INPUTS
        ),
        format!(
            "arqonbus_hosted_operator_emitted_total{{operator=\"echo\"}} {}",
            4 * INPUTS
        ),
        "arqonbus_hosted_operator_faults_total{operator=\"echo\"} 0".to_string(),
    ];
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (status, body) = common::http_get(bus.admin_addr(), "/metrics").unwrap();
        assert_eq!(status, 200);
        if wanted.iter().all(|w| body.lines().any(|l| l == w)) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{wanted:?} not in:\n{body}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_cannot_write_operator_topics_or_forge_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_owned();
    let bus = TestBus::start(move |c| c.data_dir = data_dir);
    let client = client_on_shard(bus.addr, 0).await;
    for topic in ["sys.operator.fault", "sys.operator.param"] {
        let err = client
            .publish_acked(Outgoing::new("lab", topic).bytes("forged"))
            .await
            .unwrap_err();
        assert_eq!(
            err.code(),
            Some(ErrorCode::PermissionDenied),
            "{topic}: {err}"
        );
    }
    let mut sub = client.subscribe("lab", ">").await.unwrap();
    let mut forged = Outgoing::new("lab", "lab.data.point").into_message();
    forged.emitted_by = "kuramoto".into();
    forged.input_sequence = 3;
    client
        .publish_acked(Outgoing::from_message(forged))
        .await
        .unwrap();
    let got = next(&mut sub, 10).await;
    assert!(got.emitted_by.is_empty(), "the bus clears emitted_by");
    assert_eq!(got.input_sequence, 0);
}

/// A reality parameter (`sys.control.param.set`) retunes the hosted operators of that reality
/// that declare a parameter of its name, from its position in the reality's sequence on; other
/// realities and undeclared names are untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reality_params_retune_hosted_operators() {
    use arqonbus::proto::v1::param::Value;
    let echo = operator_wasm("echo");
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_owned();
    let bus = TestBus::start(move |c| {
        c.data_dir = data_dir;
        c.control.controller_tokens = vec![common::policy::CONTROLLER_TOKEN.into()];
        c.operators = vec![operator_file(
            "echo",
            echo,
            "ops-*",
            "ops.in.>",
            &[("copies", ParamConfig::Number(2.0))],
        )];
    });
    let ctl = common::policy::controller(bus.addr).await;
    let client = client_on_shard(bus.addr, 0).await;
    // Outputs behind one input, as the acked sequences show.
    let outputs = |reality: &'static str| {
        let client = client.clone();
        async move {
            let a = client
                .publish_acked(Outgoing::new(reality, "ops.in.x").bytes("1"))
                .await
                .unwrap();
            let b = client
                .publish_acked(Outgoing::new(reality, "ops.in.x").bytes("2"))
                .await
                .unwrap();
            b.sequence - a.sequence - 1
        }
    };
    assert_eq!(outputs("ops-tuned").await, 2);
    ctl.set_param("ops-tuned", "copies", Value::Number(3.0))
        .await
        .unwrap();
    ctl.set_param("ops-tuned", "unrelated", Value::Number(9.0))
        .await
        .unwrap();
    assert_eq!(outputs("ops-tuned").await, 3, "retuned from the change on");
    assert_eq!(
        outputs("ops-other").await,
        2,
        "another reality keeps its value"
    );
    // Binary values are not operator parameters: ignored.
    ctl.set_param("ops-tuned", "copies", Value::Binary(vec![1].into()))
        .await
        .unwrap();
    assert_eq!(outputs("ops-tuned").await, 3);
}
