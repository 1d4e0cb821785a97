//! kill -9 in the middle of an acked publish storm with `sync = "always"`, three times: after
//! each restart every acked pulse is present, intact and in order, and new sequences continue
//! after them.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arqonbus_client::{Client, ConnectOptions, Outgoing};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start(config: &std::path::Path, addr: &str) -> Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_arqonbus"))
        .args(["serve", "--shards", "2", "--listen", addr])
        // The default admin port is fixed; other tests run side by side.
        .args(["--admin-listen", "127.0.0.1:0", "--config"])
        .arg(config)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    let mut line = String::new();
    while !line.contains("listening") {
        line.clear();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "server exited early: {seen}"
        );
        seen.push_str(&line);
    }
    std::thread::spawn(move || for _ in stderr.lines() {});
    child
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acked_pulses_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("arqonbus.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\n[limits]\nmax_frame_bytes = 65536\n[storage]\nsegment_bytes = 262144\n[[retention]]\nrealities = \"lab-*\"\nsync = \"always\"\n",
            dir.path().join("data")
        ),
    )
    .unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    // sequence -> payload, for every ack received, over all rounds.
    let acked: Arc<Mutex<BTreeMap<u64, Vec<u8>>>> = Default::default();

    for round in 0..3u32 {
        let mut child = start(&config, &addr);
        let mut publishers = Vec::new();
        for p in 0..4u32 {
            let c = Client::connect(addr.as_str(), ConnectOptions::default())
                .await
                .unwrap();
            let acked = acked.clone();
            publishers.push(tokio::spawn(async move {
                // Keep many acked publishes in flight at once.
                let mut i = 0u32;
                loop {
                    let batch: Vec<_> = (0..32)
                        .map(|_| {
                            i += 1;
                            let payload = format!("r{round}-p{p}-{i}").into_bytes();
                            let c = c.clone();
                            async move {
                                let ack = c
                                    .publish_acked(
                                        Outgoing::new("lab-crash", "storm.acked.pulse")
                                            .bytes(payload.clone()),
                                    )
                                    .await?;
                                Ok::<_, arqonbus_client::ClientError>((ack.sequence, payload))
                            }
                        })
                        .collect();
                    for r in futures::future::join_all(batch).await {
                        match r {
                            Ok((seq, payload)) => {
                                acked.lock().unwrap().insert(seq, payload);
                            }
                            Err(_) => return,
                        }
                    }
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(400 + 150 * round as u64)).await;
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        for p in publishers {
            p.await.unwrap();
        }
        assert!(
            !acked.lock().unwrap().is_empty(),
            "round {round} acked nothing"
        );
    }

    let child = start(&config, &addr);
    let c = Client::connect(addr.as_str(), ConnectOptions::default())
        .await
        .unwrap();
    let (all, _) = c
        .history(common::history_query("lab-crash", None, None, 0))
        .await
        .unwrap()
        .collect_all()
        .await
        .unwrap();
    let acked = acked.lock().unwrap().clone();
    let stored: BTreeMap<u64, Vec<u8>> = all
        .iter()
        .map(|m| (m.sequence, m.payload.clone().unwrap().value))
        .collect();
    for (seq, payload) in acked.iter() {
        assert_eq!(
            stored.get(seq),
            Some(payload),
            "acked sequence {seq} lost or changed"
        );
    }
    let seqs: Vec<u64> = all.iter().map(|m| m.sequence).collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).collect::<Vec<_>>(),
        "in order, no gaps"
    );
    let next = c
        .publish_acked(Outgoing::new("lab-crash", "storm.after.restart").bytes("new"))
        .await
        .unwrap();
    assert_eq!(next.sequence, *seqs.last().unwrap() + 1);
    assert!(next.sequence > *acked.keys().last().unwrap());
    drop(c);
    let mut child = child;
    child.kill().unwrap();
    child.wait().unwrap();
    eprintln!(
        "{} pulses acked across 3 crashes, {} stored",
        acked.len(),
        all.len()
    );
}
