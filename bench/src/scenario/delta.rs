//! `delta`: what a delta-only topic saves on the wire, and whether subscribers rebuild the
//! producer's state exactly (docs/delta.md).
//!
//! A producer keeps a state of `state_bytes` (1 KB) and changes about 1 % of it per step —
//! `scattered`: ten single bytes at random places; `contiguous`: one run of ten bytes at a
//! random place — and publishes every whole state twice: on a delta-only topic
//! (`bench.delta.<variant>`, which the server must declare with a `[[delta]]` rule) and on a
//! plain one (`bench.full.<variant>`) of the same reality. Subscribers of each topic, on
//! several connections covering every shard the server has, count the bytes their connection
//! read off the wire. Delta subscribers rebuild each state (keyframes, ArqonDelta 1 deltas,
//! a CRC-32 check after each); at the end every subscriber's state must hash (SHA-256) to the
//! producer's final state.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use arqonbus_proto::v1::server_frame;
use futures::future::try_join_all;
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use super::splitmix64;
use crate::delta::Chain;
use crate::driver::arqon;
use crate::payload::now_ns;
use crate::report::{DeltaMetrics, DeltaSub, DeltaVariant};
use crate::schedule::OpenLoop;
use crate::target::Target;

/// Topics under this prefix are delta-only in the configuration bench/lib.sh writes.
pub const DELTA_PREFIX: &str = "bench.delta";
pub const FULL_PREFIX: &str = "bench.full";
const STATE_TYPE_URL: &str = "type.googleapis.com/arqon.bench.State";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// `changed_bytes` single bytes at random places.
    Scattered,
    /// One run of `changed_bytes` bytes at a random place.
    Contiguous,
}

impl Change {
    pub fn name(self) -> &'static str {
        match self {
            Change::Scattered => "scattered",
            Change::Contiguous => "contiguous",
        }
    }
}

#[derive(Debug, Clone)]
pub struct DeltaSpec {
    pub steps: u64,
    pub state_bytes: usize,
    pub changed_bytes: usize,
    pub changes: Vec<Change>,
    /// Subscriber connections per topic.
    pub subscribers: usize,
    /// Steps per second (each step is two publishes); 0 is as fast as the bus takes them.
    pub rate_per_s: u64,
    pub seed: u64,
    pub drain_timeout: Duration,
}

/// The producer's state machine: a seeded state and seeded changes.
pub struct Producer {
    pub state: Vec<u8>,
    change: Change,
    changed_bytes: usize,
    rng: u64,
}

impl Producer {
    pub fn new(state_bytes: usize, changed_bytes: usize, change: Change, seed: u64) -> Self {
        let mut rng = seed;
        let state = (0..state_bytes)
            .map(|_| {
                rng = splitmix64(rng);
                rng as u8
            })
            .collect();
        Producer {
            state,
            change,
            changed_bytes: changed_bytes.min(state_bytes),
            rng,
        }
    }

    fn next(&mut self) -> u64 {
        self.rng = splitmix64(self.rng);
        self.rng
    }

    /// Changes the state for the next step; every changed byte gets a different value.
    pub fn step(&mut self) {
        let len = self.state.len();
        if len == 0 || self.changed_bytes == 0 {
            return;
        }
        match self.change {
            Change::Scattered => {
                for _ in 0..self.changed_bytes {
                    let at = (self.next() % len as u64) as usize;
                    self.state[at] ^= 1 + (self.next() % 255) as u8;
                }
            }
            Change::Contiguous => {
                let at = (self.next() % (len - self.changed_bytes + 1) as u64) as usize;
                for i in 0..self.changed_bytes {
                    self.state[at + i] ^= 1 + (self.next() % 255) as u8;
                }
            }
        }
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub async fn run(
    target: &Target,
    reality: &str,
    spec: &DeltaSpec,
    notes: &mut Vec<String>,
) -> Result<DeltaMetrics> {
    let mut m = DeltaMetrics {
        steps: spec.steps,
        state_bytes: spec.state_bytes,
        changed_bytes: spec.changed_bytes,
        subscribers_per_topic: spec.subscribers,
        ..Default::default()
    };
    for (k, &change) in spec.changes.iter().enumerate() {
        let v = run_variant(target, reality, spec, change, spec.seed ^ k as u64, notes)
            .await
            .with_context(|| format!("the {} variant", change.name()))?;
        m.variants.push(v);
    }
    Ok(m)
}

struct Received {
    sub: DeltaSub,
    state: Vec<u8>,
}

async fn run_variant(
    target: &Target,
    reality: &str,
    spec: &DeltaSpec,
    change: Change,
    seed: u64,
    notes: &mut Vec<String>,
) -> Result<DeltaVariant> {
    let delta_topic = format!("{DELTA_PREFIX}.{}", change.name());
    let full_topic = format!("{FULL_PREFIX}.{}", change.name());
    let delta_subs = connect_spread(target, reality, &delta_topic, spec.subscribers).await?;
    let full_subs = connect_spread(target, reality, &full_topic, spec.subscribers).await?;
    let mut publisher = arqon::connect(target.addr, None, "bench-delta-pub")
        .await
        .context("connecting the producer")?
        .into_publisher_on(
            &[
                (reality.to_string(), delta_topic.clone()),
                (reality.to_string(), full_topic.clone()),
            ],
            "bench-delta-pub",
        );

    let (stop_tx, stop_rx) = watch::channel(false);
    let counts: Vec<std::sync::Arc<std::sync::atomic::AtomicU64>> = (0..2 * spec.subscribers)
        .map(|_| Default::default())
        .collect();
    let mut tasks = Vec::new();
    for (i, sub) in delta_subs.into_iter().chain(full_subs).enumerate() {
        let is_delta = i < spec.subscribers;
        tasks.push(tokio::spawn(receive(
            sub,
            i % spec.subscribers,
            is_delta,
            stop_rx.clone(),
            counts[i].clone(),
        )));
    }

    let mut producer = Producer::new(spec.state_bytes, spec.changed_bytes, change, seed);
    let started = now_ns();
    let mut schedule =
        (spec.rate_per_s > 0).then(|| OpenLoop::new(started, spec.rate_per_s, spec.steps));
    let mut step = 0u64;
    while step < spec.steps {
        let batch = match schedule.as_mut() {
            None => 64.min(spec.steps - step),
            Some(s) => {
                let due = s.due(now_ns(), 1024);
                if due.is_empty() {
                    publisher.flush().await?;
                    if let Some(wait) = s.wait_ns(now_ns()) {
                        tokio::time::sleep(Duration::from_nanos(wait)).await;
                    }
                    continue;
                }
                due.end - due.start
            }
        };
        for _ in 0..batch {
            producer.step();
            for route in 0..2 {
                publisher
                    .send_with(route, false, |msg| {
                        if let Some(any) = msg.payload.as_mut() {
                            any.type_url = STATE_TYPE_URL.to_string();
                            any.value.extend_from_slice(&producer.state);
                        }
                    })
                    .await?;
            }
            step += 1;
        }
    }
    publisher.flush().await?;
    let publish_secs = (now_ns() - started) as f64 / 1e9;
    let final_sha = sha256_hex(&producer.state);

    super::drain(&counts, spec.steps, spec.drain_timeout, || {
        tasks.iter().all(|t| t.is_finished())
    })
    .await;
    let _ = stop_tx.send(true);
    let answers = publisher.answers().clone();
    drop(publisher);
    let errors = answers.errors.load(std::sync::atomic::Ordering::Relaxed);
    let trouble = (errors > 0).then(|| {
        format!(
            "{errors} error answers, last: {}",
            answers
                .last_error
                .lock()
                .expect("not poisoned")
                .as_ref()
                .map(|e| e.to_string())
                .unwrap_or_default()
        )
    });
    let mut v = DeltaVariant {
        change: change.name().to_string(),
        delta_topic,
        full_topic,
        publish_secs,
        producer_sha256: final_sha.clone(),
        ..Default::default()
    };
    if let Some(t) = trouble {
        notes.push(format!("{} producer: {t}", change.name()));
    }
    for t in tasks {
        let mut r: Received = t.await.context("subscriber task panicked")?;
        r.sub.final_sha256 = sha256_hex(&r.state);
        r.sub.matches = r.sub.final_sha256 == final_sha && r.sub.pulses > 0;
        if r.sub.pulses + r.sub.dropped_notices < spec.steps {
            r.sub.lost = spec.steps - r.sub.pulses - r.sub.dropped_notices;
        }
        if let Some(e) = &r.sub.first_error {
            notes.push(format!(
                "{} {} subscriber {}: {} errors, first: {e}",
                change.name(),
                if r.sub.delta { "delta" } else { "full" },
                r.sub.index,
                r.sub.errors
            ));
        }
        if r.sub.delta {
            v.delta_subs.push(r.sub);
        } else {
            v.full_subs.push(r.sub);
        }
    }
    let mean = |subs: &[DeltaSub]| {
        subs.iter().map(|s| s.wire_bytes as f64).sum::<f64>() / subs.len().max(1) as f64
    };
    v.delta_wire_bytes_per_sub = mean(&v.delta_subs);
    v.full_wire_bytes_per_sub = mean(&v.full_subs);
    if v.full_wire_bytes_per_sub > 0.0 {
        v.wire_ratio = v.delta_wire_bytes_per_sub / v.full_wire_bytes_per_sub;
    }
    v.all_match = v
        .delta_subs
        .iter()
        .chain(&v.full_subs)
        .all(|s| s.matches && s.errors == 0 && s.lost == 0);
    let mut shards: BTreeMap<u32, usize> = BTreeMap::new();
    for s in v.delta_subs.iter().chain(&v.full_subs) {
        *shards.entry(s.shard).or_default() += 1;
    }
    v.subscribers_by_shard = shards;
    Ok(v)
}

/// `n` subscriber connections to `topic`, spread over the server's shards: up to 4n are opened
/// and picked in turn from each shard (by Welcome.shard); the rest are closed.
async fn connect_spread(
    target: &Target,
    reality: &str,
    topic: &str,
    n: usize,
) -> Result<Vec<arqon::Subscriber>> {
    let candidates = try_join_all((0..4 * n).map(|i| async move {
        arqon::connect(target.addr, None, &format!("bench-delta-sub-{i}")).await
    }))
    .await
    .context("connecting subscribers")?;
    let mut by_shard: BTreeMap<u32, Vec<arqon::Session>> = BTreeMap::new();
    for s in candidates {
        by_shard.entry(s.welcome.shard).or_default().push(s);
    }
    let mut picked = Vec::new();
    while picked.len() < n {
        let before = picked.len();
        for group in by_shard.values_mut() {
            if picked.len() < n {
                if let Some(s) = group.pop() {
                    picked.push(s);
                }
            }
        }
        if picked.len() == before {
            bail!("fewer than {n} connections opened");
        }
    }
    let mut subs = Vec::new();
    for mut s in picked {
        s.subscribe(&[reality.to_string()], topic).await?;
        subs.push(s.into_subscriber());
    }
    Ok(subs)
}

async fn receive(
    mut sub: arqon::Subscriber,
    index: usize,
    is_delta: bool,
    mut stop: watch::Receiver<bool>,
    count: std::sync::Arc<std::sync::atomic::AtomicU64>,
) -> Received {
    let mut out = DeltaSub {
        index,
        delta: is_delta,
        shard: sub.shard(),
        ..Default::default()
    };
    let mut chain = Chain::default();
    let mut full_state = Vec::new();
    loop {
        let frame = tokio::select! {
            biased;
            _ = stop.changed() => break,
            f = sub.next_frame() => f,
        };
        let frame = match frame {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => {
                out.errors += 1;
                out.first_error.get_or_insert_with(|| format!("{e:#}"));
                break;
            }
        };
        match frame.kind {
            Some(server_frame::Kind::Deliver(d)) => {
                let msg = d.message.unwrap_or_default();
                let value = msg.payload.map(|a| a.value).unwrap_or_default();
                out.pulses += 1;
                out.payload_bytes += value.len() as u64;
                if !is_delta {
                    if msg.delta.is_some() {
                        out.errors += 1;
                        out.first_error.get_or_insert_with(|| {
                            "a pulse of a plain topic carried DeltaInfo".into()
                        });
                    }
                    full_state = value;
                } else {
                    match msg.delta {
                        None => {
                            out.errors += 1;
                            out.first_error.get_or_insert_with(|| {
                                format!(
                                    "pulse {} of a delta-only topic without DeltaInfo (is the \
                                     server's [[delta]] rule for {DELTA_PREFIX}.> there?)",
                                    msg.sequence
                                )
                            });
                        }
                        Some(di) => {
                            if let Err(e) = chain.take(
                                msg.sequence,
                                di.keyframe,
                                di.base_sequence,
                                di.checksum,
                                &value,
                            ) {
                                out.errors += 1;
                                out.first_error.get_or_insert_with(|| e.to_string());
                            }
                        }
                    }
                }
                count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            Some(server_frame::Kind::Dropped(d)) => {
                out.dropped_notices += d.count;
                count.fetch_add(d.count, std::sync::atomic::Ordering::Relaxed);
            }
            Some(server_frame::Kind::Error(e)) => {
                out.errors += 1;
                out.first_error
                    .get_or_insert_with(|| crate::driver::ServerError::from_proto(&e).to_string());
            }
            _ => {}
        }
    }
    out.keyframes = chain.keyframes;
    out.deltas = chain.deltas;
    out.wire_bytes = sub.wire_bytes();
    Received {
        sub: out,
        state: if is_delta { chain.state } else { full_state },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_change_about_the_asked_bytes() {
        for change in [Change::Scattered, Change::Contiguous] {
            let mut p = Producer::new(1024, 10, change, 7);
            let mut total = 0;
            for _ in 0..100 {
                let before = p.state.clone();
                p.step();
                let diff: Vec<usize> = (0..1024).filter(|&i| before[i] != p.state[i]).collect();
                assert!(
                    !diff.is_empty() && diff.len() <= 10,
                    "{change:?}: {}",
                    diff.len()
                );
                if change == Change::Contiguous {
                    assert_eq!(diff.len(), 10, "every byte of the run changes");
                    assert_eq!(diff[9] - diff[0], 9, "one run");
                }
                total += diff.len();
            }
            assert!(total >= 950, "{change:?}: {total}");
        }
    }

    #[test]
    fn the_same_seed_makes_the_same_states() {
        let mut a = Producer::new(64, 10, Change::Scattered, 1);
        let mut b = Producer::new(64, 10, Change::Scattered, 1);
        for _ in 0..10 {
            a.step();
            b.step();
        }
        assert_eq!(sha256_hex(&a.state), sha256_hex(&b.state));
        assert_eq!(sha256_hex(b"").len(), 64);
    }
}
