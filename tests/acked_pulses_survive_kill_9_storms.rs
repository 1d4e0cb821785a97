//! Fifty kill -9s in a row under acked publish storms (`sync = "always"`, four publishers over
//! two realities, 16 KiB segments so the log rolls every ~100 pulses, three group commits per
//! reality allowed to sync at once so later flushes can finish first): after every restart
//! every pulse ever acked is present and unchanged, sequences are gapless from 1, and no
//! sequence is ever acked twice (a reused sequence would be).

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arqonbus_client::{Client, ConnectOptions, Outgoing};

const CYCLES: u32 = 50;
const REALITIES: [&str; 2] = ["lab-storm-a", "lab-storm-b"];

type Acked = Arc<Mutex<BTreeMap<(usize, u64), Vec<u8>>>>;

async fn check_everything_acked_is_there(addr: &str, acked: &Acked, cycle: u32) {
    let c = Client::connect(addr, ConnectOptions::default())
        .await
        .unwrap();
    let acked = acked.lock().unwrap().clone();
    for (r, reality) in REALITIES.iter().enumerate() {
        let (all, _) = c
            .history(common::history_query(reality, None, None, 0))
            .await
            .unwrap()
            .collect_all()
            .await
            .unwrap();
        let seqs: Vec<u64> = all.iter().map(|m| m.sequence).collect();
        assert_eq!(
            seqs,
            (1..=seqs.len() as u64).collect::<Vec<_>>(),
            "cycle {cycle}: {reality} has gaps"
        );
        for ((ar, seq), payload) in acked.range((r, 0)..(r + 1, 0)) {
            assert_eq!(*ar, r);
            let stored = all
                .get(*seq as usize - 1)
                .map(|m| m.payload.clone().unwrap().value);
            assert_eq!(
                stored.as_ref(),
                Some(payload),
                "cycle {cycle}: acked {reality} sequence {seq} lost or changed"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acked_pulses_survive_kill_9_storms() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("arqonbus.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\n[limits]\nmax_frame_bytes = 4096\n[storage]\nsegment_bytes = 16384\ncheckpoint_interval_ms = 3600000\nflushes_in_flight = 3\n[[retention]]\nrealities = \"lab-*\"\nsync = \"always\"\n",
            dir.path().join("data")
        ),
    )
    .unwrap();
    let addr = format!("127.0.0.1:{}", common::free_port());
    let acked: Acked = Default::default();
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };

    for cycle in 0..CYCLES {
        let mut child = common::spawn_serve(&config, &addr);
        check_everything_acked_is_there(&addr, &acked, cycle).await;
        let mut publishers = Vec::new();
        for p in 0..4u32 {
            let c = Client::connect(addr.as_str(), ConnectOptions::default())
                .await
                .unwrap();
            let acked = acked.clone();
            let r = (p % 2) as usize;
            publishers.push(tokio::spawn(async move {
                let mut i = 0u32;
                loop {
                    let batch: Vec<_> = (0..16)
                        .map(|_| {
                            i += 1;
                            // Sizes vary so records straddle pages and segment ends.
                            let mut payload = format!("c{cycle}-p{p}-{i}-").into_bytes();
                            payload.resize(40 + (i as usize * 37) % 400, b'.');
                            let c = c.clone();
                            async move {
                                let ack = c
                                    .publish_acked(
                                        Outgoing::new(REALITIES[r], "storm.acked.pulse")
                                            .bytes(payload.clone()),
                                    )
                                    .await?;
                                Ok::<_, arqonbus_client::ClientError>((ack.sequence, payload))
                            }
                        })
                        .collect();
                    for result in futures::future::join_all(batch).await {
                        match result {
                            Ok((seq, payload)) => {
                                let before = acked.lock().unwrap().insert((r, seq), payload);
                                assert!(
                                    before.is_none(),
                                    "{} sequence {seq} was acked twice",
                                    REALITIES[r]
                                );
                            }
                            Err(_) => return,
                        }
                    }
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(20 + next() % 120)).await;
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        for p in publishers {
            p.await.unwrap();
        }
    }
    let child = common::spawn_serve(&config, &addr);
    check_everything_acked_is_there(&addr, &acked, CYCLES).await;
    let mut child = child;
    child.kill().unwrap();
    child.wait().unwrap();
    let acked = acked.lock().unwrap().len();
    let segments = std::fs::read_dir(dir.path().join("data/realities/lab-storm-a.reality"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "seg")
        })
        .count();
    eprintln!(
        "{CYCLES} kill -9 cycles: {acked} pulses acked, all present after every restart; \
         lab-storm-a has {segments} segments; {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(
        acked > CYCLES as usize * 10,
        "the storms acked too little: {acked}"
    );
    assert!(segments > 3, "segments never rolled");
}
