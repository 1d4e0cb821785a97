//! `durable`: acked publishes that the bus must keep. ArqonBus: a retained reality (the harness
//! first asks for its history; an error answer means the reality is not retained and the
//! target is reported as unsupported). NATS: a JetStream stream with file storage.

use std::collections::HashMap;
use std::future::IntoFuture;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use futures::stream::{FuturesUnordered, StreamExt};

use super::timed_bar;
use crate::driver::{arqon, nats, Names};
use crate::payload::{now_ns, Header};
use crate::report::DurableMetrics;
use crate::stats::Latency;
use crate::target::{Kind, Target};

#[derive(Debug, Clone)]
pub struct DurableSpec {
    pub payload_bytes: usize,
    pub duration: Duration,
    pub count: Option<u64>,
    /// Publishes awaiting their ack at once.
    pub inflight: usize,
    /// ArqonBus: the retained reality to publish to (it must be configured retained).
    pub reality: String,
    pub ack_timeout: Duration,
    pub progress: bool,
}

pub enum Outcome {
    Done(DurableMetrics),
    /// The target cannot do durable publishes; the reason.
    Unsupported(String),
}

pub async fn run(
    target: &Target,
    names: &Names,
    spec: &DurableSpec,
    notes: &mut Vec<String>,
) -> Result<Outcome> {
    match target.kind {
        Kind::Arqon => run_arqon(target, spec, notes).await,
        Kind::Nats => run_nats(target, names, spec, notes).await,
    }
}

struct Window {
    acked: u64,
    failed: u64,
    sent: u64,
    latency: Latency,
    first_ns: u64,
    last_ack_ns: u64,
}

impl Window {
    fn new() -> Self {
        Window {
            acked: 0,
            failed: 0,
            sent: 0,
            latency: Latency::new(),
            first_ns: 0,
            last_ack_ns: 0,
        }
    }

    fn metrics(&self, storage: String, spec: &DurableSpec) -> DurableMetrics {
        let ns = self.last_ack_ns.saturating_sub(self.first_ns);
        let bytes = self.acked * spec.payload_bytes.max(crate::payload::HEADER_BYTES) as u64;
        let (acked_per_s, mb_per_s) = super::rates(self.acked, bytes, ns);
        DurableMetrics {
            storage,
            inflight: spec.inflight,
            sent: self.sent,
            acked: self.acked,
            failed: self.failed,
            secs: ns as f64 / 1e9,
            acked_per_s,
            mb_per_s,
            ack_latency: self.latency.summary(),
        }
    }
}

async fn run_arqon(
    target: &Target,
    spec: &DurableSpec,
    notes: &mut Vec<String>,
) -> Result<Outcome> {
    let mut session = arqon::connect(target.addr, None, "bench-durable").await?;
    if let Some(err) = session.history_probe(&spec.reality, "bench.>").await? {
        return Ok(Outcome::Unsupported(format!(
            "reality {:?} is not retained: HistoryGet was answered with {err}",
            spec.reality
        )));
    }
    let mut publisher =
        session.into_publisher(std::slice::from_ref(&spec.reality), "bench-durable");
    let mut acks = publisher.take_acks().context("ack stream")?;
    let mut w = Window::new();
    let mut pending: HashMap<u64, u64> = HashMap::new();
    let deadline = now_ns() + spec.duration.as_nanos() as u64;
    let limit = spec.count.unwrap_or(u64::MAX);
    let pb = timed_bar(spec.progress, spec.duration, "durable");
    w.first_ns = now_ns();
    loop {
        let sending = w.sent < limit && now_ns() < deadline;
        if !sending && pending.is_empty() {
            break;
        }
        if sending && pending.len() < spec.inflight {
            while w.sent < limit && pending.len() < spec.inflight {
                let t = now_ns();
                let h = Header {
                    publisher: 0,
                    seq: w.sent,
                    reality: 0,
                    flags: 0,
                    intended_ns: t,
                    sent_ns: t,
                };
                let corr = publisher.send(0, &h, spec.payload_bytes, true).await?;
                pending.insert(corr, t);
                w.sent += 1;
            }
            publisher.flush().await?;
        }
        let ack = match tokio::time::timeout(spec.ack_timeout, acks.recv()).await {
            Ok(Some(a)) => a,
            Ok(None) => bail!(
                "the server closed the connection with {} publishes unacknowledged",
                pending.len()
            ),
            Err(_) => bail!(
                "no PubAck within {:?} ({} publishes waiting)",
                spec.ack_timeout,
                pending.len()
            ),
        };
        let now = now_ns();
        let Some(sent_at) = pending.remove(&ack.correlation_id) else {
            continue;
        };
        match ack.result {
            Ok(_) => {
                w.acked += 1;
                w.latency.record_ns(now - sent_at);
                w.last_ack_ns = now;
            }
            Err(e) if w.acked == 0 => {
                return Ok(Outcome::Unsupported(format!(
                    "the first acked publish was answered with {e}"
                )));
            }
            Err(e) => {
                w.failed += 1;
                if w.failed == 1 {
                    notes.push(format!("publish failed: {e}"));
                }
            }
        }
        pb.set_position(
            spec.duration
                .as_millis()
                .min(((now - w.first_ns) / 1_000_000) as u128) as u64,
        );
    }
    pb.finish_and_clear();
    Ok(Outcome::Done(w.metrics(
        format!("ArqonBus retained reality {:?}", spec.reality),
        spec,
    )))
}

async fn run_nats(
    target: &Target,
    names: &Names,
    spec: &DurableSpec,
    notes: &mut Vec<String>,
) -> Result<Outcome> {
    use async_nats::jetstream::{self, stream};
    let (client, _events) = nats::connect(target.addr, "bench-durable").await?;
    let js = jetstream::new(client.clone());
    let reality = &names.realities[0];
    let subject = nats::subject(reality);
    let stream_name = format!("ARQONBENCH_{}", reality.replace('.', "_")).to_uppercase();
    let created = js
        .create_stream(stream::Config {
            name: stream_name.clone(),
            subjects: vec![subject.clone()],
            storage: stream::StorageType::File,
            // A bound on the disk the run may use.
            max_bytes: 2 << 30,
            ..Default::default()
        })
        .await;
    if let Err(e) = created {
        return Ok(Outcome::Unsupported(format!(
            "JetStream stream could not be created ({e}); start nats-server with -js"
        )));
    }
    let result = nats_window(&js, &subject, spec).await;
    if let Err(e) = js.delete_stream(&stream_name).await {
        notes.push(format!("could not delete the stream {stream_name}: {e}"));
    }
    let w = result?;
    if w.failed > 0 {
        notes.push(format!("{} JetStream publishes failed", w.failed));
    }
    Ok(Outcome::Done(w.metrics(
        format!("JetStream file stream {stream_name}"),
        spec,
    )))
}

async fn nats_window(
    js: &async_nats::jetstream::Context,
    subject: &str,
    spec: &DurableSpec,
) -> Result<Window> {
    let mut w = Window::new();
    let mut pending = FuturesUnordered::new();
    let deadline = now_ns() + spec.duration.as_nanos() as u64;
    let limit = spec.count.unwrap_or(u64::MAX);
    let pb = timed_bar(spec.progress, spec.duration, "durable");
    w.first_ns = now_ns();
    loop {
        while w.sent < limit && now_ns() < deadline && pending.len() < spec.inflight {
            let t = now_ns();
            let h = Header {
                publisher: 0,
                seq: w.sent,
                reality: 0,
                flags: 0,
                intended_ns: t,
                sent_ns: t,
            };
            let ack = js
                .publish(subject.to_string(), h.to_payload(spec.payload_bytes))
                .await?;
            let timeout = spec.ack_timeout;
            pending
                .push(async move { (t, tokio::time::timeout(timeout, ack.into_future()).await) });
            w.sent += 1;
        }
        let Some((sent_at, r)) = pending.next().await else {
            break;
        };
        let now = now_ns();
        match r {
            Ok(Ok(_)) => {
                w.acked += 1;
                w.latency.record_ns(now - sent_at);
                w.last_ack_ns = now;
            }
            Ok(Err(e)) if w.acked == 0 && w.failed == 0 => {
                bail!("first JetStream publish failed: {e}")
            }
            Ok(Err(_)) => w.failed += 1,
            Err(_) => bail!("no JetStream ack within {:?}", spec.ack_timeout),
        }
        pb.set_position(
            spec.duration
                .as_millis()
                .min(((now - w.first_ns) / 1_000_000) as u128) as u64,
        );
    }
    pb.finish_and_clear();
    Ok(w)
}
