//! TLS 1.3 over TCP and WebSocket over TLS carry the same sessions as plain TCP; TLS 1.2 and,
//! under mTLS, clients without a certificate from the configured CA are refused at the
//! handshake; a certificate reload changes what new handshakes see and drops no connection.

mod common;

use std::io::Read;
use std::time::Duration;

use arqonbus::proto::v1::{client_frame, server_frame, Publish, Subscribe};
use arqonbus::transport::Transport;
use arqonbus_client::{Client, ClientError, Outgoing};
use common::*;
use futures::StreamExt;

fn tls_bus(pki: &TestPki, client_ca: bool, require_client_cert: bool) -> TestBus {
    TestBus::start(|c| {
        c.tls_listen = Some("127.0.0.1:0".parse().unwrap());
        c.wss_listen = Some("127.0.0.1:0".parse().unwrap());
        c.tls = Some(pki.tls_config(client_ca, require_client_cert));
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_round_trip_reaches_plain_tcp_subscribers() {
    let pki = TestPki::new();
    let bus = tls_bus(&pki, false, false);
    let tls = Client::connect(bus.addr_of(Transport::Tls), pki.client_options(None))
        .await
        .expect("TLS client connects");
    let plain = client(bus.addr).await;
    let mut over_tls = tls.subscribe("lab-1", "rig.>").await.unwrap();
    let mut over_tcp = plain.subscribe("lab-1", "rig.>").await.unwrap();
    for i in 0..50u32 {
        tls.publish(Outgoing::new("lab-1", "rig.a.temp").bytes(i.to_be_bytes().to_vec()))
            .await
            .unwrap();
    }
    let ack = tls
        .publish_acked(Outgoing::new("lab-1", "rig.a.done"))
        .await
        .unwrap();
    assert_eq!(ack.sequence, 51);
    for sub in [&mut over_tls, &mut over_tcp] {
        for expected in 1..=51u64 {
            let m = tokio::time::timeout(Duration::from_secs(10), sub.next())
                .await
                .expect("delivery in time")
                .unwrap()
                .unwrap();
            assert_eq!(m.sequence, expected);
        }
    }
}

#[test]
fn wss_round_trip_with_one_frame_per_binary_message() {
    let pki = TestPki::new();
    let bus = tls_bus(&pki, false, false);
    let config = pki.rustls_client(&[&rustls::version::TLS13], None);
    let mut ws = wss_connect(bus.addr_of(Transport::Wss), config);
    match ws.hello("").and_then(|f| f.kind) {
        Some(server_frame::Kind::Welcome(_)) => {}
        other => panic!("expected Welcome, got {other:?}"),
    }
    ws.send(
        2,
        client_frame::Kind::Subscribe(Subscribe {
            subscription_id: 7,
            reality_id: "lab-ws".into(),
            pattern: "rig.>".into(),
            ..Default::default()
        }),
    );
    match ws.recv().and_then(|f| f.kind) {
        Some(server_frame::Kind::Subscribed(s)) => assert_eq!(s.subscription_id, 7),
        other => panic!("expected Subscribed, got {other:?}"),
    }
    for corr in 3..13u64 {
        ws.send(
            corr,
            client_frame::Kind::Publish(Publish {
                message: Some(arqonbus::proto::v1::ArqonMessage {
                    topic: "rig.a.temp".into(),
                    reality_id: "lab-ws".into(),
                    ..Default::default()
                }),
                ack: true,
            }),
        );
    }
    // Ten acks and ten deliveries, each its own message, in whatever interleaving.
    let (mut acks, mut delivered) = (0, Vec::new());
    while acks < 10 || delivered.len() < 10 {
        match ws.recv().and_then(|f| f.kind) {
            Some(server_frame::Kind::PubAck(_)) => acks += 1,
            Some(server_frame::Kind::Deliver(d)) => {
                assert_eq!(d.subscription_id, 7);
                delivered.push(d.message.unwrap().sequence);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(delivered, (1..=10).collect::<Vec<u64>>());
}

#[test]
fn tls_1_2_is_refused() {
    let pki = TestPki::new();
    let bus = tls_bus(&pki, false, false);
    let tls12 = pki.rustls_client(&[&rustls::version::TLS12], None);
    for transport in [Transport::Tls, Transport::Wss] {
        let Err(err) = tls_connect(bus.addr_of(transport), tls12.clone()) else {
            panic!("a TLS 1.2-only client must not complete the handshake");
        };
        let text = err.to_string().to_lowercase();
        assert!(
            text.contains("protocolversion") || text.contains("protocol version"),
            "{transport:?}: {err}"
        );
    }
    // The same client allowed TLS 1.3 gets through.
    let tls13 = pki.rustls_client(&[&rustls::version::TLS13], None);
    tls_connect(bus.addr_of(Transport::Tls), tls13).expect("TLS 1.3 handshake");
    assert!(bus.metrics().tls_handshake_failures >= 2);
}

/// Under mTLS, rustls 1.3 clients finish their side of the handshake before the server has
/// checked the certificate; the refusal shows as an alert on the first read.
fn refused_after_handshake(
    result: std::io::Result<rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>>,
) -> bool {
    let mut tls = match result {
        Err(_) => return true,
        Ok(tls) => tls,
    };
    let mut hello = Vec::new();
    prost::Message::encode(
        &arqonbus::proto::v1::ClientFrame {
            correlation_id: 1,
            kind: Some(client_frame::Kind::Hello(Default::default())),
        },
        &mut hello,
    )
    .unwrap();
    let _ = std::io::Write::write_all(&mut tls, &(hello.len() as u32).to_be_bytes());
    let _ = std::io::Write::write_all(&mut tls, &hello);
    let mut b = [0u8; 1];
    matches!(tls.read(&mut b), Err(_) | Ok(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_refuses_clients_without_a_certificate_from_the_ca() {
    let pki = TestPki::new();
    let bus = tls_bus(&pki, true, true);
    let addr = bus.addr_of(Transport::Tls);

    let no_cert = pki.rustls_client(&[&rustls::version::TLS13], None);
    assert!(refused_after_handshake(tls_connect(addr, no_cert)));
    let err = Client::connect(addr, pki.client_options(None))
        .await
        .err()
        .expect("no client certificate: refused");
    assert!(
        matches!(
            err,
            ClientError::Tls(_) | ClientError::Io(_) | ClientError::Closed
        ),
        "{err:?}"
    );

    // A certificate from another CA is refused too.
    let stranger = TestPki::new();
    let foreign = Client::connect(addr, stranger.client_options(Some("lab/eve"))).await;
    assert!(
        foreign.is_err(),
        "a certificate from an unknown CA must be refused"
    );

    // A certificate from the CA gets in (its CN `tenant/subject` becomes the session's
    // identity: see tokens_and_grants_are_enforced.rs).
    let ok = Client::connect(addr, pki.client_options(Some("lab/ada")))
        .await
        .expect("client certificate from the CA");
    ok.publish_acked(Outgoing::new("lab-1", "rig.a.temp"))
        .await
        .unwrap();
    assert!(bus.metrics().tls_handshake_failures >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_reload_serves_new_handshakes_and_keeps_open_connections() {
    let pki = TestPki::new();
    let bus = tls_bus(&pki, false, false);
    let addr = bus.addr_of(Transport::Tls);
    let before = Client::connect(addr, pki.client_options(None))
        .await
        .unwrap();
    let server_org = |pki: &TestPki| {
        let tls = tls_connect(addr, pki.rustls_client(&[&rustls::version::TLS13], None)).unwrap();
        let der = tls.conn.peer_certificates().unwrap()[0].to_vec();
        String::from_utf8_lossy(&der).contains("rotated")
    };
    assert!(!server_org(&pki));

    pki.write_server_cert("rotated");
    // What SIGHUP does: raise the reload flag; the reload thread re-reads the files.
    bus.server()
        .reload_flag()
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !server_org(&pki) {
        assert!(
            std::time::Instant::now() < deadline,
            "new certificate never served"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // The connection made before the reload still works.
    before
        .publish_acked(Outgoing::new("lab-1", "rig.a.temp"))
        .await
        .expect("old connection survives the reload");

    // A broken file leaves the current certificate in force.
    std::fs::write(pki.path("server.key"), "not a key").unwrap();
    assert!(bus.server().reload_tls().is_err());
    assert!(server_org(&pki));
}
