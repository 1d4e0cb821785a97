//! Every refusal the bus makes reaches HTTP callers as its status (400, 401, 403, 413, 429, 503)
//! and gRPC callers as its code, with the bus's own message.

mod common;

use arqonbus_client::proto::v1::ArqonMessage;
use arqonbus_client::{Client, ConnectOptions, Outgoing};
use arqonbus_sidecar::pb::PublishRequest;
use common::{bearer, free_port, sidecar_toml, sidecar_toml_with, Bus, Sidecar};
use serde_json::Value;

const BUS_EXTRA: &str = "[limits]\nmax_payload_bytes = 4096\n\n\
                         [[tenants]]\nname = \"slow\"\npublish_pulses_per_sec = 2\n";

/// POSTs `body` with `token` and `?ack=true`; returns the status and the JSON error.
async fn publish(sidecar: &Sidecar, token: &str, path: &str, body: Vec<u8>) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .post(sidecar.url(&format!("{path}?ack=true")))
        .body(body);
    if !token.is_empty() {
        request = request.header("authorization", bearer(token));
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// The native client's message for the same refusal: what the sidecar must pass through.
async fn native_error(bus: &Bus, token: &str, outgoing: Outgoing) -> String {
    let options = ConnectOptions {
        token: token.to_owned(),
        ..ConnectOptions::default()
    };
    let result = match Client::connect(bus.addr, options).await {
        Ok(c) => c.publish_acked(outgoing).await.map(|_| ()),
        Err(e) => Err(e),
    };
    match result.expect_err("the bus refuses it natively too") {
        arqonbus_client::ClientError::Server { message, .. } => message,
        other => panic!("expected a server error, got {other}"),
    }
}

fn grpc_publish(
    token: &str,
    reality: &str,
    topic: &str,
    bytes: usize,
) -> tonic::Request<PublishRequest> {
    let message = ArqonMessage {
        reality_id: reality.into(),
        topic: topic.into(),
        payload: Some(prost_types::Any {
            type_url: "application/octet-stream".into(),
            value: vec![7; bytes],
        }),
        ..Default::default()
    };
    let mut request = tonic::Request::new(PublishRequest {
        message: Some(message),
        ack: true,
    });
    request
        .metadata_mut()
        .insert("authorization", bearer(token).parse().unwrap());
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_bus_refusal_has_its_http_status_and_grpc_code() {
    let bus = Bus::start(BUS_EXTRA);
    let sidecar = Sidecar::start(&sidecar_toml_with(&bus, "max_body_bytes = 8192", ""));
    let ada = bus.token("lab", "ada", "publisher", &["lab-*:rig.>"], &[]);
    let slow = bus.token("slow", "sam", "publisher", &["*:>"], &[]);
    let path = "/v1/realities/lab-1/topics/rig.a.temp";

    // 401: a token the bus cannot verify, with the bus's message; and no token at all.
    let (status, body) = publish(&sidecar, "not-a-real-token", path, b"x".to_vec()).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["code"], "UNAUTHENTICATED");
    let native = native_error(
        &bus,
        "not-a-real-token",
        Outgoing::new("lab-1", "rig.a.temp"),
    )
    .await;
    assert_eq!(body["error"]["message"], native.as_str());
    let (status, body) = publish(&sidecar, "", path, b"x".to_vec()).await;
    assert_eq!(status, 401, "{body}");

    // 403: outside ada's publish grants.
    let (status, body) = publish(
        &sidecar,
        &ada,
        "/v1/realities/other-1/topics/rig.a.temp",
        b"x".to_vec(),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "PERMISSION_DENIED");
    let native = native_error(&bus, &ada, Outgoing::new("other-1", "rig.a.temp")).await;
    assert_eq!(body["error"]["message"], native.as_str());

    // 400: a topic the bus refuses.
    let (status, body) = publish(
        &sidecar,
        &ada,
        "/v1/realities/lab-1/topics/Rig..Bad",
        b"x".to_vec(),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "INVALID_TOPIC");
    // 400: a JSON envelope that is not one (the sidecar's own check).
    let response = reqwest::Client::new()
        .post(sidecar.url(path))
        .header("authorization", bearer(&ada))
        .header("content-type", "application/json")
        .body("{\"payload\": 1, \"unknown\": 2}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);

    // 413: over the bus's max_payload_bytes (4096) but within the sidecar's body limit...
    let (status, body) = publish(&sidecar, &ada, path, vec![b'x'; 5000]).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["error"]["code"], "LIMIT_EXCEEDED");
    // ...and over the sidecar's own http.max_body_bytes (8192), refused before the bus.
    let (status, body) = publish(&sidecar, &ada, path, vec![b'x'; 10_000]).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["error"]["code"], "BODY_TOO_LARGE");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("http.max_body_bytes"));

    // 429: tenant `slow` may publish 2 pulses/s (1 per shard, a bucket of one).
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let (status, body) = publish(
            &sidecar,
            &slow,
            "/v1/realities/lab-9/topics/rig.a.temp",
            b"x".to_vec(),
        )
        .await;
        if status == 429 {
            assert_eq!(body["error"]["code"], "QUOTA_EXCEEDED");
        }
        statuses.push(status);
    }
    assert!(statuses.contains(&429), "{statuses:?}");
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 429),
        "{statuses:?}"
    );

    // The same refusals over gRPC.
    let mut grpc = sidecar.grpc_client().await;
    let code = |r: Result<tonic::Response<_>, tonic::Status>| r.map(|_| ()).unwrap_err().code();
    assert_eq!(
        code(
            grpc.publish(grpc_publish("not-a-real-token", "lab-1", "rig.a.b", 1))
                .await
        ),
        tonic::Code::Unauthenticated
    );
    assert_eq!(
        code(
            grpc.publish(grpc_publish(&ada, "other-1", "rig.a.b", 1))
                .await
        ),
        tonic::Code::PermissionDenied
    );
    assert_eq!(
        code(
            grpc.publish(grpc_publish(&ada, "lab-1", "Rig..Bad", 1))
                .await
        ),
        tonic::Code::InvalidArgument
    );
    let status = grpc
        .publish(grpc_publish(&ada, "lab-1", "rig.a.b", 5000))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    assert!(status.message().starts_with("LIMIT_EXCEEDED: "), "{status}");
    // The status counters saw each.
    for status in ["401", "403", "400", "413", "429"] {
        let series = format!(
            "arqonbus_sidecar_http_requests_total{{route=\"/v1/realities/{{reality}}/topics/{{topic}}\",status=\"{status}\"}}"
        );
        assert!(sidecar.metric(&series).await >= 1, "{series}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_bus_is_503_and_unavailable() {
    // Nothing listens on this port: every session fails to connect.
    let toml = format!(
        "[bus]\naddress = \"127.0.0.1:{}\"\ntimeout_ms = 2000\n\n[http]\nlisten = \"127.0.0.1:0\"\n\n\
         [grpc]\nlisten = \"127.0.0.1:0\"\n",
        free_port()
    );
    let sidecar = Sidecar::start(&toml);
    let response = reqwest::Client::new()
        .post(sidecar.url("/v1/realities/lab-1/topics/rig.a.temp"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "BUS_UNAVAILABLE");
    // The sidecar itself is healthy.
    let health = reqwest::get(sidecar.url("/healthz")).await.unwrap();
    assert_eq!(health.status(), 200);
    let mut grpc = sidecar.grpc_client().await;
    let status = grpc
        .publish(grpc_publish("t", "lab-1", "rig.a.b", 1))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_of_an_ungranted_reality_is_refused_before_the_stream() {
    let bus = Bus::start("");
    let sidecar = Sidecar::start(&sidecar_toml(&bus, ""));
    let ada = bus.token("lab", "ada", "subscriber", &[], &["lab-*:>"]);
    let response = reqwest::Client::new()
        .get(sidecar.url("/v1/realities/kept-7/history?limit=10"))
        .header("authorization", bearer(&ada))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    let response = reqwest::Client::new()
        .get(sidecar.url("/v1/realities/lab-1/subscribe?pattern=a.%3E&last_n=1&from_sequence=2"))
        .header("authorization", bearer(&ada))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let response = reqwest::Client::new()
        .get(sidecar.url("/v1/realities/kept-7/subscribe?pattern=a.%3E"))
        .header("authorization", bearer(&ada))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
}
