//! Northbound: what HTTP and gRPC callers publish through the sidecar is what native clients
//! receive (payload, trace context, the caller's own identity), and SSE, gRPC and native
//! subscribers see the same sequences; history reads over HTTP and gRPC return the asked range.

mod common;

use std::time::Duration;

use arqonbus_client::proto::v1::{history_get, ArqonMessage, HistoryGet};
use arqonbus_client::Outgoing;
use arqonbus_sidecar::pb::{subscribe_event, PublishRequest, SubscribeRequest};
use common::{bearer, sidecar_toml, Bus, Sidecar, SseReader};
use futures::StreamExt;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(10);

async fn next_pulse(sub: &mut arqonbus_client::Subscription) -> ArqonMessage {
    tokio::time::timeout(WAIT, sub.next())
        .await
        .expect("a pulse in time")
        .expect("the subscription is open")
        .expect("a pulse, not an error")
}

fn grpc_request<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", bearer(token).parse().unwrap());
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_publish_reaches_a_native_subscriber_as_its_caller() {
    let bus = Bus::start("");
    let sidecar = Sidecar::start(&sidecar_toml(&bus, ""));
    let root = bus.admin_token();
    let ada = bus.token("lab", "ada", "publisher", &["lab-*:rig.>"], &[]);
    let native = bus.client(&root).await;
    let mut sub = native.subscribe("lab-1", "rig.>").await.unwrap();
    let http = reqwest::Client::new();
    let url = sidecar.url("/v1/realities/lab-1/topics/rig.a.temp");
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    // A raw body with ?ack=true: the PubAck comes back as JSON.
    let response = http
        .post(format!("{url}?ack=true"))
        .header("authorization", bearer(&ada))
        .header("traceparent", traceparent)
        .body("21.5")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let ack: Value = response.json().await.unwrap();
    let pulse = next_pulse(&mut sub).await;
    assert_eq!(ack["sequence"].as_u64(), Some(pulse.sequence));
    assert_eq!(ack["id"].as_str(), Some(pulse.id.as_str()));
    assert_eq!(pulse.topic, "rig.a.temp");
    let payload = pulse.payload.as_ref().unwrap();
    assert_eq!(payload.value, b"21.5");
    assert_eq!(payload.type_url, "application/octet-stream");
    assert_eq!(pulse.trace_context["traceparent"], traceparent);
    // The bus stamped the caller's identity, not the sidecar's: the session used ada's token.
    assert_eq!(
        (pulse.tenant.as_str(), pulse.subject.as_str()),
        ("lab", "ada")
    );

    // A JSON envelope, without ack: 202, and the envelope's fields arrive.
    let envelope = serde_json::json!({
        "payload": {"t": 21.5, "unit": "C"},
        "spectral": {"coherence": 0.93, "criticality": 0.1, "eigenvalues": [1.5, 0.25]},
        "trace_context": {"tracestate": "lab=1"},
        "reply_to": "rig.a.answers",
        "producer_id": "notebook-7",
    });
    let response = http
        .post(&url)
        .header("authorization", bearer(&ada))
        .json(&envelope)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let pulse = next_pulse(&mut sub).await;
    let payload = pulse.payload.as_ref().unwrap();
    assert_eq!(payload.type_url, "application/json");
    let body: Value = serde_json::from_slice(&payload.value).unwrap();
    assert_eq!(body, envelope["payload"]);
    let spectral = pulse.spectral.as_ref().unwrap();
    assert_eq!(spectral.coherence, 0.93);
    assert_eq!(spectral.eigenvalues, vec![1.5, 0.25]);
    assert_eq!(pulse.trace_context["tracestate"], "lab=1");
    assert_eq!(pulse.reply_to, "rig.a.answers");
    assert_eq!(pulse.producer_id, "notebook-7");

    // Another caller's token is another session: the bus sees root, not ada.
    let response = http
        .post(format!("{url}?ack=true&type_url=text/plain"))
        .header("authorization", bearer(&root))
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let pulse = next_pulse(&mut sub).await;
    assert_eq!(pulse.subject, "root");
    assert_eq!(pulse.payload.unwrap().type_url, "text/plain");
    assert_eq!(sidecar.metric("arqonbus_sidecar_sessions_open").await, 2);
    assert_eq!(
        sidecar
            .metric("arqonbus_sidecar_published_total{surface=\"http\"}")
            .await,
        3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_grpc_and_native_subscribers_see_the_same_sequences() {
    let bus = Bus::start("");
    let sidecar = Sidecar::start(&sidecar_toml(&bus, ""));
    let root = bus.admin_token();
    let native = bus.client(&root).await;
    let mut native_sub = native.subscribe("lab-2", "seq.>").await.unwrap();

    // SSE: the response starts once the subscription is registered with the bus.
    let response = reqwest::Client::new()
        .get(sidecar.url("/v1/realities/lab-2/subscribe?pattern=seq.%3E"))
        .header("authorization", bearer(&root))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    let mut sse = SseReader::new(response);

    // gRPC: likewise, the call returns once the bus said Subscribed.
    let mut grpc = sidecar.grpc_client().await;
    let mut grpc_sub = grpc
        .subscribe(grpc_request(
            SubscribeRequest {
                reality_id: "lab-2".into(),
                pattern: "seq.>".into(),
                ..Default::default()
            },
            &root,
        ))
        .await
        .unwrap()
        .into_inner();

    // Pulses from a native publisher and from gRPC, matching and not.
    let mut acked = Vec::new();
    for i in 0..20u32 {
        let topic = if i % 4 == 3 {
            "other.topic"
        } else {
            "seq.a.tick"
        };
        if i % 2 == 0 {
            let ack = native
                .publish_acked(Outgoing::new("lab-2", topic).bytes(i.to_be_bytes().to_vec()))
                .await
                .unwrap();
            if topic.starts_with("seq.") {
                acked.push(ack.sequence);
            }
        } else {
            let message = ArqonMessage {
                reality_id: "lab-2".into(),
                topic: topic.into(),
                payload: Some(prost_types::Any {
                    type_url: "application/octet-stream".into(),
                    value: i.to_be_bytes().to_vec(),
                }),
                ..Default::default()
            };
            let response = grpc
                .publish(grpc_request(
                    PublishRequest {
                        message: Some(message),
                        ack: true,
                    },
                    &root,
                ))
                .await
                .unwrap()
                .into_inner();
            if topic.starts_with("seq.") {
                acked.push(response.ack.unwrap().sequence);
            }
        }
    }
    assert_eq!(acked.len(), 15);

    let mut from_native = Vec::new();
    let mut from_sse = Vec::new();
    let mut from_grpc = Vec::new();
    for _ in 0..acked.len() {
        from_native.push(next_pulse(&mut native_sub).await.sequence);
        let (event, data) = sse.next(WAIT).await;
        assert_eq!(event, "pulse");
        let pulse: Value = serde_json::from_str(&data).unwrap();
        from_sse.push(pulse["sequence"].as_u64().unwrap());
        let event = tokio::time::timeout(WAIT, grpc_sub.next())
            .await
            .expect("a gRPC event in time")
            .unwrap()
            .unwrap();
        match event.event {
            Some(subscribe_event::Event::Pulse(m)) => from_grpc.push(m.sequence),
            other => panic!("expected a pulse, got {other:?}"),
        }
    }
    assert_eq!(from_native, acked);
    assert_eq!(from_sse, acked);
    assert_eq!(from_grpc, acked);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_over_http_and_grpc_returns_the_asked_range() {
    let bus = Bus::start("");
    let sidecar = Sidecar::start(&sidecar_toml(&bus, ""));
    let root = bus.admin_token();
    let http = reqwest::Client::new();
    let mut sequences = Vec::new();
    for i in 0..10 {
        let response = http
            .post(sidecar.url("/v1/realities/kept-1/topics/log.line.add?ack=true"))
            .header("authorization", bearer(&root))
            .body(format!("line {i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let ack: Value = response.json().await.unwrap();
        sequences.push(ack["sequence"].as_u64().unwrap());
    }
    assert_eq!(sequences, (1..=10).collect::<Vec<_>>());

    let response = http
        .get(
            sidecar
                .url("/v1/realities/kept-1/history?pattern=log.%3E&from_sequence=3&to_sequence=8"),
        )
        .header("authorization", bearer(&root))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "application/x-ndjson"
    );
    let text = response.text().await.unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 6, "{text}");
    let got: Vec<u64> = lines[..5]
        .iter()
        .map(|l| l["sequence"].as_u64().unwrap())
        .collect();
    assert_eq!(got, vec![3, 4, 5, 6, 7]);
    assert_eq!(lines[0]["payload"]["value_base64"], "bGluZSAy"); // "line 2"
    assert_eq!(lines[5]["end"]["count"], 5);
    assert_eq!(lines[5]["end"]["next_sequence"], 8);

    let mut grpc = sidecar.grpc_client().await;
    let query = HistoryGet {
        reality_id: "kept-1".into(),
        pattern: ">".into(),
        from: Some(history_get::From::FromSequence(8)),
        to: None,
        limit: 100,
    };
    let pulses: Vec<u64> = grpc
        .history(grpc_request(query, &root))
        .await
        .unwrap()
        .into_inner()
        .map(|m| m.unwrap().sequence)
        .collect()
        .await;
    assert_eq!(pulses, vec![8, 9, 10]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_bounded_evicted_when_idle_and_expire() {
    let bus = Bus::start("");
    let sidecar = Sidecar::start(&common::sidecar_toml_with(
        &bus,
        "sse_keepalive_ms = 200",
        "[sessions]\nmax_sessions = 2\nidle_timeout_ms = 1000\n",
    ));
    let tokens: Vec<String> = ["a", "b", "c"]
        .iter()
        .map(|s| bus.token("lab", s, "publisher,subscriber", &["lab-*:>"], &["lab-*:>"]))
        .collect();
    let http = reqwest::Client::new();
    let publish = |token: &String| {
        http.post(sidecar.url("/v1/realities/lab-3/topics/s.t?ack=true"))
            .header("authorization", bearer(token))
            .body("x")
            .send()
    };
    assert_eq!(publish(&tokens[0]).await.unwrap().status(), 200);
    assert_eq!(publish(&tokens[1]).await.unwrap().status(), 200);
    assert_eq!(sidecar.metric("arqonbus_sidecar_sessions_open").await, 2);
    // A third token: the least recently used idle session (a) makes room.
    assert_eq!(publish(&tokens[2]).await.unwrap().status(), 200);
    assert_eq!(sidecar.metric("arqonbus_sidecar_sessions_open").await, 2);
    assert_eq!(
        sidecar
            .metric("arqonbus_sidecar_sessions_evicted_total")
            .await,
        1
    );
    // b and c held by open streams: a new token finds no idle session to evict.
    let mut streams = Vec::new();
    for token in &tokens[1..] {
        let response = http
            .get(sidecar.url("/v1/realities/lab-3/subscribe?pattern=s.%3E"))
            .header("authorization", bearer(token))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        streams.push(response);
    }
    let response = publish(&tokens[0]).await.unwrap();
    assert_eq!(response.status(), 503);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "SIDECAR_BUSY");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("sessions.max_sessions"));
    // Streams closed, sessions unused: they expire after idle_timeout_ms (1 s).
    drop(streams);
    tokio::time::timeout(Duration::from_secs(10), async {
        while sidecar.metric("arqonbus_sidecar_sessions_open").await != 0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("idle sessions expired");
    assert_eq!(sidecar.metric("arqonbus_sidecar_streams_open").await, 0);
    assert_eq!(
        sidecar
            .metric("arqonbus_sidecar_sessions_expired_total")
            .await,
        2
    );
}
