//! Acked-publish storms and the check that every acked pulse came back: shared by the kill -9
//! storms and the power-cut test.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use arqonbus_client::{Client, ConnectOptions, Outgoing};

/// Every pulse acked so far: (index of its reality, sequence) → payload.
pub type Acked = Arc<Mutex<BTreeMap<(usize, u64), Vec<u8>>>>;

/// Publishes acked batches of `batch` pulses to `realities[r]` on `topic` until the bus goes
/// away, recording each ack; a sequence acked twice fails the test. Payloads name the cycle,
/// the publisher and the pulse, and vary in size so records straddle pages and segment ends.
#[allow(clippy::too_many_arguments)]
pub async fn publish_until_gone(
    c: Client,
    realities: &'static [&'static str],
    r: usize,
    topic: &'static str,
    cycle: u32,
    p: u32,
    batch: usize,
    acked: Acked,
) {
    let mut i = 0u32;
    loop {
        let sends: Vec<_> = (0..batch)
            .map(|_| {
                i += 1;
                let mut payload = format!("c{cycle}-p{p}-{i}-").into_bytes();
                payload.resize(40 + (i as usize * 37) % 400, b'.');
                let c = c.clone();
                async move {
                    let ack = c
                        .publish_acked(Outgoing::new(realities[r], topic).bytes(payload.clone()))
                        .await?;
                    Ok::<_, arqonbus_client::ClientError>((ack.sequence, payload))
                }
            })
            .collect();
        for result in futures::future::join_all(sends).await {
            match result {
                Ok((seq, payload)) => {
                    let before = acked.lock().unwrap().insert((r, seq), payload);
                    assert!(
                        before.is_none(),
                        "{} sequence {seq} was acked twice",
                        realities[r]
                    );
                }
                Err(_) => return,
            }
        }
    }
}

/// Reads every reality back: sequences gapless from 1, and every acked pulse present with its
/// bytes. `when` starts each failure message ("cycle 3", "after power cut 3").
pub async fn check_everything_acked_is_there(
    addr: &str,
    realities: &[&str],
    acked: &Acked,
    when: &str,
) {
    let c = Client::connect(addr, ConnectOptions::default())
        .await
        .unwrap();
    let acked = acked.lock().unwrap().clone();
    for (r, reality) in realities.iter().enumerate() {
        let (all, _) = c
            .history(super::history_query(reality, None, None, 0))
            .await
            .unwrap()
            .collect_all()
            .await
            .unwrap();
        let seqs: Vec<u64> = all.iter().map(|m| m.sequence).collect();
        assert_eq!(
            seqs,
            (1..=seqs.len() as u64).collect::<Vec<_>>(),
            "{when}: {reality} has gaps"
        );
        for ((_, seq), payload) in acked.range((r, 0)..(r + 1, 0)) {
            let stored = all
                .get(*seq as usize - 1)
                .map(|m| m.payload.clone().unwrap().value);
            assert_eq!(
                stored.as_ref(),
                Some(payload),
                "{when}: acked {reality} sequence {seq} lost or changed ({} records survived)",
                all.len()
            );
        }
    }
    let _ = c.close().await;
}
