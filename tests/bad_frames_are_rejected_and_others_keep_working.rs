//! Oversize, undecodable and pre-Hello frames get their error code and a closed connection;
//! request-level mistakes get an error and the connection goes on; meanwhile a well-behaved
//! client keeps publishing and receiving.

mod common;

use std::time::Duration;

use arqonbus::proto::v1::{
    client_frame, server_frame, ArqonMessage, ErrorCode, Hello, Publish, Subscribe, Unsubscribe,
};
use arqonbus_client::Outgoing;
use common::{client, error_code, RawConn, TestBus};
use futures::StreamExt;

fn publish(reality: &str, topic: &str, ack: bool) -> client_frame::Kind {
    client_frame::Kind::Publish(Publish {
        message: Some(ArqonMessage {
            reality_id: reality.into(),
            topic: topic.into(),
            ..Default::default()
        }),
        ack,
    })
}

/// A healthy client round trip, to prove the server still serves others.
async fn healthy_round_trip(addr: std::net::SocketAddr, tag: &str) {
    let c = client(addr).await;
    let mut sub = c.subscribe("healthy", "ok.>").await.unwrap();
    c.publish(Outgoing::new("healthy", "ok.ping.now").bytes(tag))
        .await
        .unwrap();
    let m = tokio::time::timeout(Duration::from_secs(10), sub.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(m.payload.unwrap().value, tag.as_bytes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_frame_is_refused_without_reading_it() {
    let bus = TestBus::start(|c| c.limits.max_frame_bytes = 4096);
    let addr = bus.addr;
    let verdict = tokio::task::spawn_blocking(move || {
        let mut raw = RawConn::connect(addr);
        raw.hello();
        // Declare 1 GiB and send only a little: the server must answer from the prefix.
        raw.send_raw(&(1u32 << 30).to_be_bytes());
        raw.send_raw(&[0u8; 100]);
        let f = raw.recv().expect("an error frame");
        (error_code(&f), raw.is_closed())
    })
    .await
    .unwrap();
    assert_eq!(verdict, (Some(ErrorCode::FrameTooLarge), true));
    healthy_round_trip(addr, "after-oversize").await;
    assert!(bus.metrics().protocol_errors >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_frame_gets_decode_failed() {
    let bus = TestBus::start(|_| {});
    let addr = bus.addr;
    let verdict = tokio::task::spawn_blocking(move || {
        let mut raw = RawConn::connect(addr);
        raw.hello();
        let garbage = [0xffu8; 16];
        raw.send_raw(&(garbage.len() as u32).to_be_bytes());
        raw.send_raw(&garbage);
        let f = raw.recv().expect("an error frame");
        (error_code(&f), raw.is_closed())
    })
    .await
    .unwrap();
    assert_eq!(verdict, (Some(ErrorCode::DecodeFailed), true));
    healthy_round_trip(addr, "after-garbage").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anything_before_hello_gets_hello_required() {
    let bus = TestBus::start(|_| {});
    let addr = bus.addr;
    let verdict = tokio::task::spawn_blocking(move || {
        let mut raw = RawConn::connect(addr);
        raw.send_kind(7, publish("r", "a.b", true));
        let f = raw.recv().expect("an error frame");
        (f.correlation_id, error_code(&f), raw.is_closed())
    })
    .await
    .unwrap();
    assert_eq!(verdict, (7, Some(ErrorCode::HelloRequired), true));
    healthy_round_trip(addr, "after-no-hello").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_protocol_version_is_refused() {
    let bus = TestBus::start(|_| {});
    let addr = bus.addr;
    let verdict = tokio::task::spawn_blocking(move || {
        let mut raw = RawConn::connect(addr);
        raw.send_kind(
            1,
            client_frame::Kind::Hello(Hello {
                protocol_version: 99,
                ..Default::default()
            }),
        );
        let f = raw.recv().expect("an error frame");
        (error_code(&f), raw.is_closed())
    })
    .await
    .unwrap();
    assert_eq!(verdict, (Some(ErrorCode::UnsupportedVersion), true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_client_is_closed_after_handshake_timeout() {
    let bus = TestBus::start(|c| c.limits.handshake_timeout_ms = 200);
    let addr = bus.addr;
    let verdict = tokio::task::spawn_blocking(move || {
        let mut raw = RawConn::connect(addr);
        let f = raw.recv().expect("an error frame");
        (error_code(&f), raw.is_closed())
    })
    .await
    .unwrap();
    assert_eq!(verdict, (Some(ErrorCode::HelloRequired), true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_errors_keep_the_connection_open() {
    let bus = TestBus::start(|_| {});
    let addr = bus.addr;
    tokio::task::spawn_blocking(move || {
        let mut raw = RawConn::connect(addr);
        raw.hello();
        let cases: Vec<(client_frame::Kind, ErrorCode)> = vec![
            (publish("lab", "Bad.Topic", true), ErrorCode::InvalidTopic),
            (publish("lab", "a.*", false), ErrorCode::InvalidTopic),
            (
                publish("bad reality", "a.b", true),
                ErrorCode::InvalidReality,
            ),
            (
                client_frame::Kind::Publish(Publish {
                    message: None,
                    ack: true,
                }),
                ErrorCode::InvalidRequest,
            ),
            (
                client_frame::Kind::Subscribe(Subscribe {
                    subscription_id: 0,
                    reality_id: "lab".into(),
                    pattern: ">".into(),
                    ..Default::default()
                }),
                ErrorCode::InvalidRequest,
            ),
            (
                client_frame::Kind::Subscribe(Subscribe {
                    subscription_id: 5,
                    reality_id: "lab".into(),
                    pattern: "a.>.b".into(),
                    ..Default::default()
                }),
                ErrorCode::InvalidTopic,
            ),
            (
                client_frame::Kind::Unsubscribe(Unsubscribe {
                    subscription_id: 42,
                }),
                ErrorCode::InvalidRequest,
            ),
            (
                client_frame::Kind::HistoryGet(Default::default()),
                ErrorCode::InvalidReality,
            ),
        ];
        for (i, (kind, code)) in cases.into_iter().enumerate() {
            let corr = 100 + i as u64;
            raw.send_kind(corr, kind);
            let f = raw.recv().expect("an answer");
            assert_eq!(f.correlation_id, corr);
            assert_eq!(error_code(&f), Some(code), "case {i}: {f:?}");
        }
        // Still usable: an acked publish succeeds.
        raw.send_kind(9, publish("lab", "a.b", true));
        match raw.recv().and_then(|f| f.kind) {
            Some(server_frame::Kind::PubAck(ack)) => assert_eq!(ack.sequence, 1),
            other => panic!("expected PubAck, got {other:?}"),
        }
    })
    .await
    .unwrap();
    assert!(bus.metrics().request_errors >= 8);
}
