//! The W3C `traceparent` a pulse carries in `trace_context` appears in the (JSON) logs that
//! concern it: when its owner sequences it, and when a publish is refused.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use arqonbus_client::Outgoing;

const SEQUENCED: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const REFUSED: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

fn traced(topic: &str, traceparent: &str) -> Outgoing {
    let context = HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
    Outgoing::new("traced", topic)
        .bytes("x")
        .trace_context(context)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traceparent_appears_in_pulse_logs() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("arqonbus.toml");
    std::fs::write(
        &config,
        "admin_listen = \"off\"\n[log]\nlevel = \"arqonbus=debug\"\nformat = \"json\"\n",
    )
    .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_arqonbus"))
        .args(["serve", "--shards", "2", "--listen", &addr.to_string()])
        .arg("--config")
        .arg(&config)
        .env_remove("RUST_LOG")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (lines_tx, lines_rx) = std::sync::mpsc::channel::<serde_json::Value>();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            let json: serde_json::Value =
                serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
            if lines_tx.send(json).is_err() {
                break;
            }
        }
    });
    // Wait for the listening line.
    loop {
        let line = lines_rx.recv_timeout(Duration::from_secs(30)).unwrap();
        if line["fields"]["message"] == "arqonbus listening" {
            break;
        }
    }

    let client = common::client(addr).await;
    client
        .publish_acked(traced("lab.trace.ok", SEQUENCED))
        .await
        .unwrap();
    assert!(client
        .publish_acked(traced("Lab.trace.bad", REFUSED))
        .await
        .is_err());
    client.close().await.unwrap();

    let mut sequenced = None;
    let mut refused = None;
    while sequenced.is_none() || refused.is_none() {
        let line = lines_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("both log lines");
        let fields = &line["fields"];
        match fields["message"].as_str() {
            Some("pulse sequenced") => sequenced = Some(fields.clone()),
            Some("publish refused") => refused = Some(fields.clone()),
            _ => {}
        }
    }
    let sequenced = sequenced.unwrap();
    assert_eq!(sequenced["traceparent"], SEQUENCED, "{sequenced}");
    assert_eq!(sequenced["reality"], "traced");
    assert_eq!(sequenced["sequence"], 1);
    let refused = refused.unwrap();
    assert_eq!(refused["traceparent"], REFUSED, "{refused}");
    assert_eq!(refused["topic"], "Lab.trace.bad");

    // SAFETY: sending a signal to our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
}
