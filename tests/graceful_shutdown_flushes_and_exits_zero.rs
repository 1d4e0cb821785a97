//! SIGTERM to a real `arqonbus serve` process: it stops accepting, flushes what it queued to
//! subscribers, and exits 0.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use arqonbus_client::Outgoing;
use futures::StreamExt;

const PULSES: u64 = 5_000;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_flushes_and_exits_zero() {
    let port = free_port();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_arqonbus"))
        .args(["serve", "--shards", "2", "--listen", &addr.to_string()])
        .args(["--admin-listen", "127.0.0.1:0"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for the "listening" line.
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains("arqonbus listening") {
        line.clear();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "server exited early"
        );
    }
    std::thread::spawn(move || for _ in stderr.lines() {});

    let sub_client = common::client(addr).await;
    let mut sub = sub_client.subscribe("bye", ">").await.unwrap();
    let publisher = common::client(addr).await;
    for i in 0..PULSES {
        publisher
            .publish(Outgoing::new("bye", "last.words.said").bytes(i.to_string()))
            .await
            .unwrap();
    }
    // Every pulse has been sequenced once the ack of a final acked publish is back.
    let last = publisher
        .publish_acked(Outgoing::new("bye", "last.words.said").bytes("end"))
        .await
        .unwrap();

    // SAFETY: sending a signal to our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };

    let mut got = 0;
    loop {
        match tokio::time::timeout(Duration::from_secs(10), sub.next()).await {
            Ok(Some(Ok(m))) => {
                got += 1;
                if m.sequence == last.sequence {
                    break;
                }
            }
            other => panic!("subscription ended after {got} pulses: {other:?}"),
        }
    }
    assert_eq!(
        got,
        PULSES + 1,
        "every queued pulse was flushed before the exit"
    );

    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "exit status {status:?}");
    assert!(
        std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_err(),
        "nothing listens after shutdown"
    );
}
