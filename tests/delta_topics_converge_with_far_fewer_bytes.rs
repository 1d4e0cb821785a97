//! Delta-only topics (docs/delta.md) over real sockets: a producer publishes a 1 KB state that
//! changes about 1% per step; subscribers on both shards, a late joiner and a subscriber that
//! was shed all end with the producer's exact state (SHA-256), while the bus sends far fewer
//! bytes than for the same states on an ordinary topic. History serves keyframe + deltas that
//! rebuild every recorded state. A producer may publish deltas of its own; a stale base or a
//! wrong checksum is refused.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arqonbus::config::{DeltaRule, SyncMode};
use arqonbus::proto::delta;
use arqonbus::proto::v1::{client_frame, server_frame, ArqonMessage, ErrorCode, HistoryGet};
use arqonbus_client::{Client, ClientError, ConnectOptions, Outgoing, Subscription};
use common::{client_on_shard, retain, RawConn, TestBus};
use futures::StreamExt;
use sha2::{Digest, Sha256};

const TOPIC: &str = "sim.state.lattice";
const STEPS: usize = 10_000;
const STATE_BYTES: usize = 1024;
const TYPE_URL: &str = "type.googleapis.com/lab.Lattice";

/// The producer's states: 1 KB, each step changing 10 bytes (1%) at random places.
fn make_states(seed: u64, steps: usize) -> Vec<Vec<u8>> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut state: Vec<u8> = (0..STATE_BYTES).map(|_| rng.u8(..)).collect();
    (0..steps)
        .map(|_| {
            for _ in 0..STATE_BYTES / 100 {
                let at = rng.usize(..STATE_BYTES);
                state[at] = state[at].wrapping_add(rng.u8(1..));
            }
            state.clone()
        })
        .collect()
}

fn sha(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

fn value(m: &ArqonMessage) -> &[u8] {
    &m.payload.as_ref().expect("payload").value
}

/// Reads until the state whose SHA-256 is `until` arrives (or, with `None`, any pulse at or past
/// `sequence`); returns that state and how many `Dropped` reports came. Publishes the latest
/// sequence it saw in `seen`. (The bus sequences presence pulses in the reality too, so the
/// sequence of the last state is not known in advance.)
async fn last_state(sub: &mut Subscription, until: [u8; 32], seen: &AtomicU64) -> (Vec<u8>, u64) {
    let mut dropped = 0;
    loop {
        let item = tokio::time::timeout(Duration::from_secs(30), sub.next())
            .await
            .expect("the subscriber stalled")
            .expect("stream open");
        match item {
            Ok(m) => {
                assert_eq!(m.topic, TOPIC);
                // What the application sees is whole (on an ordinary topic: no DeltaInfo).
                assert!(m.delta.as_ref().is_none_or(|d| d.keyframe), "rebuilt whole");
                seen.store(m.sequence, Ordering::Relaxed);
                if sha(value(&m)) == until {
                    return (value(&m).to_vec(), dropped);
                }
            }
            Err(ClientError::Dropped { .. }) => dropped += 1,
            Err(e) => panic!("subscription error: {e}"),
        }
    }
}

/// What a reader task ends with: the last state, the `Dropped` reports, the subscription.
type Read = tokio::task::JoinHandle<(Vec<u8>, u64, Subscription)>;

/// A subscription read on its own task until `sequence`.
fn reader(mut sub: Subscription, until: [u8; 32]) -> (Arc<AtomicU64>, Read) {
    let seen = Arc::new(AtomicU64::new(0));
    let progress = seen.clone();
    let task = tokio::spawn(async move {
        let (state, dropped) = last_state(&mut sub, until, &progress).await;
        (state, dropped, sub)
    });
    (seen, task)
}

/// Publishes every state to `reality` (the first sequence it gets is about `first`), staying at
/// most 100 pulses ahead of the slowest of `readers`; returns the last sequence.
async fn publish_all(
    producer: &Client,
    reality: &str,
    states: &[Vec<u8>],
    first: u64,
    readers: &[Arc<AtomicU64>],
) -> u64 {
    for (i, s) in states[..states.len() - 1].iter().enumerate() {
        let sequence = first + i as u64;
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while readers
            .iter()
            .any(|r| r.load(Ordering::Relaxed) + 100 < sequence)
        {
            assert!(
                std::time::Instant::now() < deadline,
                "a reader stopped reading"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        producer
            .publish(Outgoing::new(reality, TOPIC).payload(TYPE_URL, s.clone()))
            .await
            .unwrap();
    }
    let last = states.last().unwrap().clone();
    producer
        .publish_acked(Outgoing::new(reality, TOPIC).payload(TYPE_URL, last))
        .await
        .unwrap()
        .sequence
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_topics_converge_with_far_fewer_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let bus = TestBus::start(|c| {
        c.shards = 2;
        retain(c, dir.path(), "lab-kept", SyncMode::Os);
        c.delta.push(DeltaRule {
            realities: "lab-*".into(),
            topics: "sim.state.>".into(),
            keyframe_every: 100,
        });
        // Small buffers, so a subscriber that does not read is shed soon.
        c.limits.max_frame_bytes = 64 << 10;
        c.limits.max_payload_bytes = 32 << 10;
        c.storage.history_chunk_bytes = 16 << 10;
        c.limits.max_outbound_bytes = 256 << 10;
    });
    let states = make_states(7, STEPS);
    let want = sha(states.last().unwrap());
    let producer = client_on_shard(bus.addr, 0).await;

    // The same states, once on an ordinary topic and once delta-only, to subscribers on both
    // shards; the bytes the bus sent are compared.
    let mut sent = Vec::new();
    let mut kept_clients = Vec::new();
    for reality in ["plain-1", "lab-1"] {
        let (mut progress, mut tasks) = (Vec::new(), Vec::new());
        for shard in [0, 1] {
            let c = client_on_shard(bus.addr, shard).await;
            let (seen, task) = reader(c.subscribe(reality, "sim.>").await.unwrap(), want);
            progress.push(seen);
            tasks.push(task);
            kept_clients.push(c);
        }
        let before = bus.metrics().bytes_out;
        publish_all(&producer, reality, &states, 1, &progress).await;
        for task in tasks {
            let (state, dropped, _) = task.await.unwrap();
            assert_eq!(
                sha(&state),
                want,
                "{reality}: the subscriber ends with the state"
            );
            assert_eq!(dropped, 0, "{reality}: paced, nothing is shed");
        }
        sent.push(bus.metrics().bytes_out - before);
    }
    let ratio = sent[0] as f64 / sent[1] as f64;
    println!(
        "bytes sent for {STEPS} states of {STATE_BYTES} B to 2 subscribers: whole {}, delta {} \
         ({ratio:.1}x fewer)",
        sent[0], sent[1]
    );
    // The envelope bounds the saving: each delivery still carries id, topic, type URL, causal
    // entry and the publisher's identity (tenant `anonymous` and `session-<uuid>`, about 57
    // bytes here), about 200 of the ~260 bytes of a delta delivery (5.5x before the identity
    // was stamped into every pulse, 4.5x since).
    assert!(ratio >= 4.0, "delta-only sent {ratio:.1}x fewer bytes");
    let m = bus.metrics();
    assert!(
        m.delta_deliveries >= 2 * (STEPS as u64) * 9 / 10,
        "{}",
        m.delta_deliveries
    );

    // A late joiner gets the current state at once, before anything else is published.
    let late = client_on_shard(bus.addr, 1).await;
    let mut late_sub = late.subscribe("lab-1", "sim.>").await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(10), late_sub.next())
        .await
        .expect("the late joiner gets the current state first")
        .unwrap()
        .unwrap();
    assert_eq!(sha(value(&first)), want);

    // A subscriber that reads too slowly is shed, told so, and still converges: after a gap it
    // is sent a keyframe, never a delta on a state it does not have.
    let slow = Client::connect(
        bus.addr,
        ConnectOptions {
            subscription_buffer: 1,
            ..ConnectOptions::default()
        },
    )
    .await
    .unwrap();
    let slow_sub = slow.subscribe("lab-1", "sim.>").await.unwrap();
    // Enough that socket buffers cannot hold it all.
    let more = make_states(8, 4 * STEPS);
    let resent_before = bus.metrics().delta_keyframes_resent;
    // Neither is read while the states go by, flat out; then both read, and a few more come.
    publish_all(&producer, "lab-1", &more, STEPS as u64 + 1, &[]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let tail = make_states(9, 10);
    let want_more = sha(tail.last().unwrap());
    let (_, slow_task) = reader(slow_sub, want_more);
    let (_, late_task) = reader(late_sub, want_more);
    // The readers first drain what was queued for them; then the tail comes slowly enough for
    // readers that keep up.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for state in &tail[..tail.len() - 1] {
        producer
            .publish(Outgoing::new("lab-1", TOPIC).payload(TYPE_URL, state.clone()))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let last = publish_all(&producer, "lab-1", &tail[tail.len() - 1..], 0, &[]).await;
    let (state, dropped, _) = slow_task.await.unwrap();
    assert!(
        dropped > 0,
        "the slow subscriber was not shed; make it slower"
    );
    assert_eq!(sha(&state), want_more, "the shed subscriber converged");
    let (state, _, mut late_sub) = late_task.await.unwrap();
    assert_eq!(sha(&state), want_more, "the late joiner converged");
    assert!(bus.metrics().pulses_shed > 0);
    assert!(bus.metrics().delta_keyframes_resent > resent_before);

    // A producer's own delta is applied by the bus; a stale base or a bad checksum is refused.
    let base = tail.last().unwrap().clone();
    let mut next = base.clone();
    next[100] ^= 0xff;
    let ack = producer
        .publish_acked(
            Outgoing::new("lab-1", TOPIC)
                .payload(TYPE_URL, Vec::new())
                .delta_of(last, &base, &next),
        )
        .await
        .unwrap();
    let (state, _) = last_state(&mut late_sub, sha(&next), &AtomicU64::new(0)).await;
    assert_eq!(state, next, "the producer's delta became the whole state");
    let stale = producer
        .publish_acked(
            Outgoing::new("lab-1", TOPIC)
                .payload(TYPE_URL, Vec::new())
                .delta_of(last, &base, &next),
        )
        .await
        .unwrap_err();
    assert_eq!(stale.code(), Some(ErrorCode::InvalidRequest), "{stale}");
    assert!(
        stale.to_string().contains("not the current state"),
        "{stale}"
    );
    let mut forged = Outgoing::new("lab-1", TOPIC)
        .payload(TYPE_URL, Vec::new())
        .delta_of(ack.sequence, &next, &base)
        .into_message();
    forged.delta.as_mut().unwrap().checksum ^= 1;
    let bad = producer
        .publish_acked(Outgoing::from_message(forged))
        .await
        .unwrap_err();
    assert!(bad.to_string().contains("CRC-32"), "{bad}");
    let not_delta = producer
        .publish_acked(
            Outgoing::new("plain-1", TOPIC)
                .payload(TYPE_URL, Vec::new())
                .delta_of(1, &base, &next),
        )
        .await
        .unwrap_err();
    assert!(
        not_delta.to_string().contains("not delta-only"),
        "{not_delta}"
    );

    // History of a retained delta-only reality: on the wire a keyframe, then deltas; rebuilt,
    // every recorded state.
    let kept: Vec<Vec<u8>> = states[..500].to_vec();
    publish_all(&producer, "lab-kept", &kept, 1, &[]).await;
    let mut raw = RawConn::connect(bus.addr);
    raw.hello();
    raw.send_kind(
        9,
        client_frame::Kind::HistoryGet(HistoryGet {
            reality_id: "lab-kept".into(),
            ..Default::default()
        }),
    );
    let (mut rebuilt, mut deltas) = (Vec::new(), 0);
    let mut held: Option<(u64, Vec<u8>)> = None;
    loop {
        let frame = raw.recv().expect("history frames");
        match frame.kind {
            Some(server_frame::Kind::HistoryChunk(chunk)) => {
                for m in chunk.messages {
                    let info = m.delta.expect("delta-only pulses carry DeltaInfo");
                    let whole = if info.keyframe {
                        value(&m).to_vec()
                    } else {
                        deltas += 1;
                        let (seq, base) = held.as_ref().expect("a keyframe came first");
                        assert_eq!(*seq, info.base_sequence);
                        delta::apply(base, value(&m), 1 << 20).unwrap()
                    };
                    assert_eq!(delta::checksum(&whole), info.checksum);
                    held = Some((m.sequence, whole.clone()));
                    rebuilt.push(whole);
                }
            }
            Some(server_frame::Kind::HistoryEnd(_)) => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(rebuilt, kept, "history rebuilds every recorded state");
    assert!(deltas >= 490, "history sent {deltas} deltas of 500");
    // The Rust client rebuilds history transparently.
    let (messages, _) = producer
        .history(HistoryGet {
            reality_id: "lab-kept".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .collect_all()
        .await
        .unwrap();
    let values: Vec<Vec<u8>> = messages.iter().map(|m| value(m).to_vec()).collect();
    assert_eq!(values, kept);
    bus.stop();
}
