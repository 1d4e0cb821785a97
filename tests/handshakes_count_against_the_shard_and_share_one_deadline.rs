//! A connection holds its place in `limits.max_connections_per_shard` from accept, through its
//! TLS handshake, and `limits.handshake_timeout_ms` is one deadline for the whole handshake (TLS,
//! then Hello) counted from accept, not a fresh one per stage.

mod common;

use std::io::Read;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use arqonbus::proto::v1::{ErrorCode, ServerFrame};
use arqonbus::transport::Transport;
use common::{error_code, tls_connect, TestBus, TestPki};
use prost::Message;

fn bus(pki: &TestPki) -> TestBus {
    let tls = pki.tls_config(false, false);
    TestBus::start(move |c| {
        c.shards = 1;
        c.limits.max_connections_per_shard = 3;
        c.limits.handshake_timeout_ms = 1000;
        c.tls_listen = Some("127.0.0.1:0".parse().unwrap());
        c.tls = Some(tls);
    })
}

fn tls13(pki: &TestPki) -> std::sync::Arc<rustls::ClientConfig> {
    pki.rustls_client(&[&rustls::version::TLS13], None)
}

#[test]
fn connections_in_their_tls_handshake_count_against_the_shard() {
    let pki = TestPki::new();
    let bus = bus(&pki);
    let tls_addr = bus.addr_of(Transport::Tls);
    // Three connections that never start their handshake fill the shard.
    let stalled: Vec<TcpStream> = (0..3)
        .map(|_| TcpStream::connect(tls_addr).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        tls_connect(tls_addr, tls13(&pki)).is_err(),
        "a fourth connection is refused while three are in their handshake"
    );
    assert!(bus.metrics().connections_refused >= 1);
    // Their handshake deadline frees the places.
    std::thread::sleep(Duration::from_millis(1200));
    drop(stalled);
    let mut tls = tls_connect(tls_addr, tls13(&pki)).expect("room again");
    // Nothing sent: the server says why it closes after what is left of the deadline.
    let mut len = [0u8; 4];
    tls.read_exact(&mut len).unwrap();
}

#[test]
fn one_deadline_covers_the_tls_handshake_and_hello() {
    let pki = TestPki::new();
    let bus = bus(&pki);
    let tls_addr = bus.addr_of(Transport::Tls);
    let accepted = Instant::now();
    let tcp = TcpStream::connect(tls_addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // Most of the deadline goes by before the TLS handshake starts...
    std::thread::sleep(Duration::from_millis(700));
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(tls13(&pki), name).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock).unwrap();
    }
    // ...and then no Hello: the refusal comes when the one deadline ends, not a fresh 1000 ms
    // after the TLS handshake.
    let mut len = [0u8; 4];
    tls.read_exact(&mut len).unwrap();
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    tls.read_exact(&mut body).unwrap();
    let at = accepted.elapsed();
    let frame = ServerFrame::decode(&body[..]).unwrap();
    assert_eq!(
        error_code(&frame),
        Some(ErrorCode::HelloRequired),
        "{frame:?}"
    );
    assert!(
        at < Duration::from_millis(1450),
        "refused {at:?} after accept"
    );
    assert!(
        at >= Duration::from_millis(900),
        "refused {at:?} after accept"
    );
}
