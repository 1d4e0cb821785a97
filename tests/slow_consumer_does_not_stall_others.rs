//! A subscriber that stops reading fills only its own outbound budget. Under `shed` it loses
//! pulses, is told exactly how many, and everything is accounted for; under `disconnect` it
//! gets SLOW_CONSUMER and is closed. Either way a fast subscriber on the same reality gets
//! every pulse.

mod common;

use std::time::Duration;

use arqonbus::config::SlowConsumerPolicy;
use arqonbus::proto::v1::{client_frame, server_frame, ErrorCode, Subscribe};
use arqonbus_client::Outgoing;
use common::{client, error_code, RawConn, TestBus};
use futures::StreamExt;

const PULSES: u64 = 20_000;
const PAYLOAD: usize = 1024;

fn slow_subscriber(addr: std::net::SocketAddr) -> RawConn {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    // A small receive window so the kernel buffers little and the server's queue fills.
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&addr.into()).unwrap();
    let stream: std::net::TcpStream = socket.into();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut raw = RawConn { stream };
    raw.hello();
    raw.send_kind(
        2,
        client_frame::Kind::Subscribe(Subscribe {
            subscription_id: 77,
            reality_id: "slow".into(),
            pattern: ">".into(),
            ..Default::default()
        }),
    );
    match raw.recv().and_then(|f| f.kind) {
        Some(server_frame::Kind::Subscribed(s)) => assert_eq!(s.subscription_id, 77),
        other => panic!("expected Subscribed, got {other:?}"),
    }
    raw
}

/// Pulses published before waiting for the fast subscriber: well inside its outbound budget,
/// so it only falls behind if the server stalls it.
const WINDOW: u64 = 32;

/// Publishes PULSES pulses in windows a reading subscriber can keep up with, while the slow
/// subscriber reads nothing; returns how many the fast subscriber got.
async fn publish_with_fast_reader(addr: std::net::SocketAddr) -> u64 {
    let fast = client(addr).await;
    let mut sub = fast.subscribe("slow", ">").await.unwrap();
    let (progress_tx, mut progress) = tokio::sync::watch::channel(0u64);
    let reader = tokio::spawn(async move {
        let mut got = 0;
        while got < PULSES {
            match tokio::time::timeout(Duration::from_secs(30), sub.next()).await {
                Ok(Some(Ok(_))) => got += 1,
                other => panic!("fast subscriber stalled or lost pulses: {other:?}"),
            }
            let _ = progress_tx.send(got);
        }
        got
    });
    let publisher = client(addr).await;
    let payload = vec![7u8; PAYLOAD];
    let mut published = 0;
    while published < PULSES {
        for _ in 0..WINDOW.min(PULSES - published) {
            publisher
                .publish(Outgoing::new("slow", "data.stream.tick").bytes(payload.clone()))
                .await
                .unwrap();
            published += 1;
        }
        tokio::time::timeout(
            Duration::from_secs(30),
            progress.wait_for(|got| *got >= published),
        )
        .await
        .expect("the fast subscriber keeps receiving while the slow one reads nothing")
        .unwrap();
    }
    reader.await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shed_drops_for_the_slow_one_only_and_says_how_many() {
    let bus = TestBus::start(|c| {
        c.limits.max_frame_bytes = 16 << 10;
        c.limits.max_outbound_bytes = 64 << 10;
        c.slow_consumer = SlowConsumerPolicy::Shed;
    });
    let addr = bus.addr;
    let mut slow = tokio::task::spawn_blocking(move || slow_subscriber(addr))
        .await
        .unwrap();

    assert_eq!(publish_with_fast_reader(addr).await, PULSES);

    // Now the slow one reads: every pulse is either delivered or counted as dropped.
    let (delivered, dropped) = tokio::task::spawn_blocking(move || {
        let (mut delivered, mut dropped) = (0u64, 0u64);
        while delivered + dropped < PULSES {
            match slow.recv().and_then(|f| f.kind) {
                Some(server_frame::Kind::Deliver(d)) => {
                    assert_eq!(d.subscription_id, 77);
                    delivered += 1;
                }
                Some(server_frame::Kind::Dropped(d)) => {
                    assert_eq!(d.subscription_id, 77);
                    dropped += d.count;
                }
                other => panic!("unexpected {other:?} after {delivered}+{dropped}"),
            }
        }
        (delivered, dropped)
    })
    .await
    .unwrap();
    assert_eq!(delivered + dropped, PULSES);
    assert!(dropped > 0, "the slow subscriber should have been shed");
    assert_eq!(bus.metrics().pulses_shed, dropped);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_policy_closes_the_slow_one_with_slow_consumer() {
    let bus = TestBus::start(|c| {
        c.limits.max_frame_bytes = 16 << 10;
        c.limits.max_outbound_bytes = 64 << 10;
        c.slow_consumer = SlowConsumerPolicy::Disconnect;
    });
    let addr = bus.addr;
    let mut slow = tokio::task::spawn_blocking(move || slow_subscriber(addr))
        .await
        .unwrap();

    assert_eq!(publish_with_fast_reader(addr).await, PULSES);

    let last = tokio::task::spawn_blocking(move || {
        let mut last = None;
        while let Some(f) = slow.recv() {
            last = Some(f);
        }
        last
    })
    .await
    .unwrap();
    let last = last.expect("the slow subscriber got frames before the close");
    assert_eq!(error_code(&last), Some(ErrorCode::SlowConsumer));
    assert_eq!(bus.metrics().slow_consumer_disconnects, 1);
}
