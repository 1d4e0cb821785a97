//! Plain WebSocket (`ws_listen`): one binary message per frame, on the same shards and data
//! path as TCP; oversize and text messages are refused with their error codes.

mod common;

use arqonbus::proto::v1::{
    client_frame, server_frame, ArqonMessage, ErrorCode, Publish, Subscribe,
};
use arqonbus::transport::Transport;
use common::*;

fn ws_bus() -> TestBus {
    TestBus::start(|c| {
        c.ws_listen = Some("127.0.0.1:0".parse().unwrap());
        c.limits.max_frame_bytes = 4096;
    })
}

#[test]
fn websocket_and_tcp_clients_share_realities() {
    let bus = ws_bus();
    let mut ws = ws_connect(bus.addr_of(Transport::Ws));
    assert!(matches!(
        ws.hello("").and_then(|f| f.kind),
        Some(server_frame::Kind::Welcome(_))
    ));
    ws.send(
        2,
        client_frame::Kind::Subscribe(Subscribe {
            subscription_id: 1,
            reality_id: "mixed".into(),
            pattern: ">".into(),
            ..Default::default()
        }),
    );
    assert!(matches!(
        ws.recv().and_then(|f| f.kind),
        Some(server_frame::Kind::Subscribed(_))
    ));
    let mut tcp = RawConn::connect(bus.addr);
    tcp.hello();
    for corr in 0..5 {
        tcp.send_kind(
            10 + corr,
            client_frame::Kind::Publish(Publish {
                message: Some(ArqonMessage {
                    topic: "a.b".into(),
                    reality_id: "mixed".into(),
                    ..Default::default()
                }),
                ack: false,
            }),
        );
    }
    for expected in 1..=5 {
        match ws.recv().and_then(|f| f.kind) {
            Some(server_frame::Kind::Deliver(d)) => {
                assert_eq!(d.message.unwrap().sequence, expected)
            }
            other => panic!("expected Deliver, got {other:?}"),
        }
    }
}

#[test]
fn oversize_and_text_messages_are_refused() {
    let bus = ws_bus();
    let mut ws = ws_connect(bus.addr_of(Transport::Ws));
    ws.hello("");
    ws.ws
        .send(tungstenite::Message::binary(vec![0u8; 10_000]))
        .unwrap();
    let frame = ws.recv().expect("an error before the close");
    assert_eq!(error_code(&frame), Some(ErrorCode::FrameTooLarge));

    let mut ws = ws_connect(bus.addr_of(Transport::Ws));
    ws.hello("");
    ws.ws.send(tungstenite::Message::text("hello")).unwrap();
    let frame = ws.recv().expect("an error before the close");
    assert_eq!(error_code(&frame), Some(ErrorCode::DecodeFailed));
    assert!(ws.recv().is_none(), "closed after the error");
    assert!(bus.metrics().protocol_errors >= 2);
}
