//! A shard that panics must not leave the bus half alive: publishes to its realities are
//! answered (an error, or the connection closed by the shutdown) instead of waiting forever,
//! `/readyz` and `/healthz` name the failed shard, and the server stops by itself with an error
//! so the service manager restarts it.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use arqonbus::routing::owner_shard;
use arqonbus::ServerError;
use arqonbus_client::{ClientError, Outgoing};
use arqonbus_proto::v1::ErrorCode;
use common::{client_on_shard, TestBus};

/// A reality whose owner is `shard` of 2.
fn reality_owned_by(shard: usize) -> String {
    (0..)
        .map(|i| format!("lab-{i}"))
        .find(|r| owner_shard(r, 2) == shard)
        .expect("some name hashes to every shard")
}

/// (status code, body) of a GET on the admin listener.
fn get(admin: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(admin).expect("admin listener");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
    (code, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicked_shard_fails_its_requests_and_stops_the_bus() {
    let bus = TestBus::start(|c| c.limits.shutdown_drain_ms = 2_000);
    let admin = bus.admin_addr();
    let doomed = reality_owned_by(1);
    // The publisher lives on the shard that survives, so its publishes cross to the owner.
    let publisher = client_on_shard(bus.addr, 0).await;
    publisher
        .publish_acked(Outgoing::new(&doomed, "rig.a.temp").bytes(vec![1]))
        .await
        .expect("the owner answers while it runs");
    assert_eq!(get(admin, "/readyz").0, 200);

    // Publishes keep coming while the owner dies: each must be answered or see its connection
    // closed, never left waiting.
    let sender = tokio::spawn(async move {
        let mut acked = 0u64;
        let mut internal = 0u64;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            assert!(
                Instant::now() < deadline,
                "the bus neither stopped nor answered"
            );
            let out = Outgoing::new(&doomed, "rig.a.temp").bytes(vec![2]);
            match tokio::time::timeout(Duration::from_secs(10), publisher.publish_acked(out)).await
            {
                Err(_) => panic!("a publish to the failed shard's reality was left unanswered"),
                Ok(Ok(_)) => acked += 1,
                Ok(Err(ClientError::Server { code, message, .. })) => match code {
                    ErrorCode::Internal => {
                        assert!(message.contains("shard 1"), "{message}");
                        internal += 1;
                    }
                    ErrorCode::ShuttingDown => return (acked, internal),
                    other => panic!("unexpected refusal {other:?}: {message}"),
                },
                Ok(Err(ClientError::Closed | ClientError::Io(_))) => return (acked, internal),
                Ok(Err(other)) => panic!("unexpected error {other}"),
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    bus.server().inject_shard_panic(1);

    // The probes name the failed shard while the others drain.
    let started = Instant::now();
    let (code, body) = loop {
        let (code, body) = get(admin, "/readyz");
        if code != 200 || started.elapsed() > Duration::from_secs(10) {
            break (code, body);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("[1] panicked"), "/readyz says why: {body}");
    let (code, body) = get(admin, "/healthz");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("[1] panicked"), "/healthz says why: {body}");

    let (acked, internal) = sender
        .await
        .expect("the publisher saw every publish answered");
    assert!(acked > 0, "publishes were acked before the failure");
    eprintln!("{acked} acked, then {internal} refused with INTERNAL before the bus closed");

    // The bus stops by itself, and says which shard failed.
    let server = bus.into_server();
    let joined = tokio::task::spawn_blocking(move || server.join());
    let result = tokio::time::timeout(Duration::from_secs(15), joined)
        .await
        .expect("the surviving shard drained and stopped on its own")
        .unwrap();
    assert!(
        matches!(result, Err(ServerError::ShardPanicked { shard: 1 })),
        "{result:?}"
    );
}
