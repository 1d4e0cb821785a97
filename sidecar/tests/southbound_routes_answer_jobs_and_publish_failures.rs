//! Southbound: a legacy HTTP rig controller (an axum server in this test, on a real socket)
//! bridged as an operator. Jobs published by a native client are answered on their reply_to;
//! an error status or a timeout is published as an error result (an NvmJobResult for NVM jobs);
//! only idempotent routes are retried; calls in flight stay within max_concurrency.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arqonbus_client::proto::nvm::v1::{NvmJob, NvmJobResult};
use arqonbus_client::proto::v1::ArqonMessage;
use arqonbus_client::{Client, Outgoing, Subscription};
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use common::{Bus, Sidecar};
use futures::StreamExt;
use prost::Message;

const WAIT: Duration = Duration::from_secs(10);

/// What the rig controller saw.
#[derive(Default)]
struct Rig {
    calls: Mutex<HashMap<String, usize>>,
    in_flight: AtomicUsize,
    most_in_flight: AtomicUsize,
    last_headers: Mutex<Option<HeaderMap>>,
}

impl Rig {
    fn count(&self, name: &str) -> usize {
        self.calls.lock().unwrap().get(name).copied().unwrap_or(0)
    }
}

async fn job(
    State(rig): State<Arc<Rig>>,
    Path(topic): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, [(&'static str, &'static str); 1], Vec<u8>) {
    *rig.calls.lock().unwrap().entry("job".into()).or_default() += 1;
    let now = rig.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    rig.most_in_flight.fetch_max(now, Ordering::SeqCst);
    *rig.last_headers.lock().unwrap() = Some(headers);
    // The rig works a while, so that concurrent calls overlap.
    tokio::time::sleep(Duration::from_millis(60)).await;
    rig.in_flight.fetch_sub(1, Ordering::SeqCst);
    let job = NvmJob::decode(body.as_ref()).unwrap_or_default();
    let answer = format!(
        "done {} on {topic} seq {}",
        job.job_id,
        q.get("seq").cloned().unwrap_or_default()
    );
    (
        StatusCode::OK,
        [("content-type", "text/plain")],
        answer.into_bytes(),
    )
}

async fn fail(State(rig): State<Arc<Rig>>, Path(name): Path<String>) -> (StatusCode, &'static str) {
    *rig.calls.lock().unwrap().entry(name).or_default() += 1;
    (StatusCode::INTERNAL_SERVER_ERROR, "rig on fire")
}

async fn slow(State(rig): State<Arc<Rig>>) -> &'static str {
    *rig.calls.lock().unwrap().entry("slow".into()).or_default() += 1;
    tokio::time::sleep(Duration::from_secs(30)).await;
    "too late"
}

async fn start_rig() -> (Arc<Rig>, std::net::SocketAddr) {
    let rig = Arc::new(Rig::default());
    let app = Router::new()
        .route("/jobs/{topic}", post(job))
        .route("/fail/{name}", post(fail))
        .route("/slow", post(slow))
        .with_state(rig.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (rig, addr)
}

fn routes(rig: std::net::SocketAddr) -> String {
    format!(
        r#"
[[routes]]
name = "rig"
reality = "lab-1"
topics = "rig.job.submit"
url = "http://{rig}/jobs/{{topic}}?seq={{sequence}}"
headers = {{ "x-lab" = "one" }}
max_concurrency = 2

[[routes]]
name = "flaky"
reality = "lab-1"
topics = "rig.flaky.submit"
url = "http://{rig}/fail/flaky"
idempotent = true
retries = 2
backoff_ms = 10

[[routes]]
name = "once"
reality = "lab-1"
topics = "rig.once.submit"
url = "http://{rig}/fail/once"

[[routes]]
name = "slow"
reality = "lab-1"
topics = "rig.slow.submit"
url = "http://{rig}/slow"
timeout_ms = 200
reply_topic = "rig.slow.result"
"#
    )
}

fn nvm_job(job_id: &str, topic: &str, reply_to: &str) -> Outgoing {
    let job = NvmJob {
        job_id: job_id.into(),
        program: "anneal".into(),
        energy_joules: 1.0,
        ..Default::default()
    };
    let out = Outgoing::new("lab-1", topic).message(&job);
    if reply_to.is_empty() {
        out
    } else {
        out.reply_to(reply_to)
    }
}

async fn next(sub: &mut Subscription) -> ArqonMessage {
    tokio::time::timeout(WAIT, sub.next())
        .await
        .expect("a result in time")
        .unwrap()
        .unwrap()
}

/// Waits until the bus lists all four routes' sessions as present in lab-1 (each subscribes
/// after the sidecar starts).
async fn routes_subscribed(native: &Client) {
    tokio::time::timeout(WAIT, async {
        loop {
            let present = native.presence("lab-1").await.unwrap();
            let routes = present
                .iter()
                .filter(|p| p.client_name.starts_with("arqonbus-sidecar/"))
                .count();
            if routes == 4 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the routes subscribed in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rig_controller_answers_jobs_and_its_failures_are_pulses() {
    let bus = Bus::start("");
    let (rig, rig_addr) = start_rig().await;
    let root = bus.admin_token();
    let operator = bus.token(
        "lab",
        "rig-bridge",
        "publisher,subscriber",
        &["lab-1:rig.>"],
        &["lab-1:rig.>"],
    );
    // The routes' bus sessions use the sidecar's own token (bus.token): an operator's grants.
    let sidecar = Sidecar::start(&format!(
        "[bus]\naddress = \"{}\"\ntoken = \"{operator}\"\n\n[http]\nlisten = \"127.0.0.1:0\"\n\n\
         [grpc]\nlisten = \"off\"\n{}",
        bus.addr,
        routes(rig_addr)
    ));
    let native = bus.client(&root).await;
    let mut results = native.subscribe("lab-1", "rig.reply.>").await.unwrap();
    let mut slow_results = native.subscribe("lab-1", "rig.slow.result").await.unwrap();
    routes_subscribed(&native).await;

    // Six jobs on the rig route: each answered on its own reply_to, two at a time at most.
    let mut asked = HashMap::new();
    for i in 0..6 {
        let ack = native
            .publish_acked(
                nvm_job(
                    &format!("job-{i}"),
                    "rig.job.submit",
                    &format!("rig.reply.job{i}"),
                )
                .trace_context(HashMap::from([(
                    "traceparent".to_string(),
                    format!("00-4bf92f3577b34da6a3ce929d0e0e47{i:02}-00f067aa0ba902b7-01"),
                )])),
            )
            .await
            .unwrap();
        asked.insert(format!("rig.reply.job{i}"), (i, ack.sequence));
    }
    for _ in 0..6 {
        let reply = next(&mut results).await;
        let (i, sequence) = asked.remove(&reply.topic).expect("a reply to an asked job");
        let payload = reply.payload.unwrap();
        assert_eq!(payload.type_url, "text/plain");
        assert_eq!(
            String::from_utf8(payload.value).unwrap(),
            format!("done job-{i} on rig.job.submit seq {sequence}")
        );
        assert_eq!(
            reply.trace_context["arqon-request-sequence"],
            sequence.to_string()
        );
        assert!(reply.trace_context["traceparent"].ends_with("-00f067aa0ba902b7-01"));
        assert_eq!(reply.producer_id, "arqonbus-sidecar/rig");
        // Published on the route's own session: the bus stamps the route's identity.
        assert_eq!(reply.subject, "rig-bridge");
    }
    assert_eq!(rig.count("job"), 6);
    assert_eq!(
        rig.most_in_flight.load(Ordering::SeqCst),
        2,
        "max_concurrency = 2"
    );
    let headers = rig.last_headers.lock().unwrap().clone().unwrap();
    assert_eq!(headers["x-lab"], "one");
    assert_eq!(headers["x-arqon-reality"], "lab-1");
    assert_eq!(
        headers["x-arqon-type-url"],
        "type.googleapis.com/arqon.nvm.v1.NvmJob"
    );
    assert!(headers.contains_key("traceparent"));

    // An idempotent route is retried (1 + 2 calls), then its NVM error result is published.
    native
        .publish_acked(nvm_job("job-f", "rig.flaky.submit", "rig.reply.flaky"))
        .await
        .unwrap();
    let failed = next(&mut results).await;
    assert_eq!(failed.topic, "rig.reply.flaky");
    let payload = failed.payload.unwrap();
    assert_eq!(
        payload.type_url,
        "type.googleapis.com/arqon.nvm.v1.NvmJobResult"
    );
    let result = NvmJobResult::decode(payload.value.as_slice()).unwrap();
    assert_eq!(result.job_id, "job-f");
    assert!(result.r#final);
    assert!(result.error.contains("500"), "{}", result.error);
    assert!(result.error.contains("rig on fire"), "{}", result.error);
    assert_eq!(rig.count("flaky"), 3);

    // A route that is not idempotent is called once, whatever the failure.
    native
        .publish_acked(
            Outgoing::new("lab-1", "rig.once.submit")
                .bytes(b"raw".to_vec())
                .reply_to("rig.reply.once"),
        )
        .await
        .unwrap();
    let failed = next(&mut results).await;
    assert_eq!(failed.topic, "rig.reply.once");
    let payload = failed.payload.unwrap();
    assert_eq!(payload.type_url, "application/vnd.arqon.sidecar.error+json");
    let error: serde_json::Value = serde_json::from_slice(&payload.value).unwrap();
    assert_eq!(error["route"], "once");
    assert_eq!(error["status"], 500);
    assert_eq!(rig.count("once"), 1);

    // A timeout, with no reply_to: the error goes to the route's reply_topic.
    native
        .publish_acked(nvm_job("job-s", "rig.slow.submit", ""))
        .await
        .unwrap();
    let failed = next(&mut slow_results).await;
    let result = NvmJobResult::decode(failed.payload.unwrap().value.as_slice()).unwrap();
    assert_eq!(result.job_id, "job-s");
    assert!(result.error.contains("200 ms"), "{}", result.error);

    // Every outcome is counted per route.
    let calls = |route: &str, outcome: &str| {
        format!("arqonbus_sidecar_route_calls_total{{route=\"{route}\",outcome=\"{outcome}\"}}")
    };
    assert_eq!(sidecar.metric(&calls("rig", "ok")).await, 6);
    assert_eq!(sidecar.metric(&calls("flaky", "error")).await, 1);
    assert_eq!(sidecar.metric(&calls("once", "error")).await, 1);
    assert_eq!(sidecar.metric(&calls("slow", "timeout")).await, 1);
    assert_eq!(
        sidecar
            .metric("arqonbus_sidecar_route_retries_total{route=\"flaky\"}")
            .await,
        2
    );
    assert_eq!(
        sidecar
            .metric("arqonbus_sidecar_route_results_total{route=\"flaky\",kind=\"error\"}")
            .await,
        1
    );
}
