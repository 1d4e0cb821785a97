//! A thousand clients connect and complete the handshake at once; each then gets a pulse
//! published after all of them subscribed.

mod common;

use std::time::Duration;

use arqonbus_client::Outgoing;
use common::{client, raise_fd_limit, TestBus};
use futures::StreamExt;

const CONNECTIONS: usize = 1_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_concurrent_connections() {
    // Both ends of every connection live in this process.
    assert!(
        raise_fd_limit() > 2 * CONNECTIONS as u64 + 100,
        "fd limit too low"
    );
    let bus = TestBus::start(|_| {});
    let addr = bus.addr;
    let handshakes = (0..CONNECTIONS).map(|_| async move {
        let c = client(addr).await;
        let sub = c.subscribe("crowd", "all.>").await.unwrap();
        (c, sub)
    });
    let clients = futures::future::join_all(handshakes).await;
    let shards: std::collections::HashSet<u32> =
        clients.iter().map(|(c, _)| c.welcome().shard).collect();
    assert_eq!(
        shards.len(),
        2,
        "the kernel spread connections over both shards"
    );

    clients[0]
        .0
        .publish(Outgoing::new("crowd", "all.hands.meet").bytes("hi"))
        .await
        .unwrap();
    let receipts = clients.into_iter().map(|(_c, mut sub)| async move {
        tokio::time::timeout(Duration::from_secs(30), sub.next())
            .await
            .expect("pulse arrives")
            .unwrap()
            .unwrap()
    });
    let got = futures::future::join_all(receipts).await;
    assert_eq!(got.len(), CONNECTIONS);
    assert!(got.iter().all(|m| m.sequence == got[0].sequence));
    assert!(bus.metrics().connections_accepted >= CONNECTIONS as u64);
}
