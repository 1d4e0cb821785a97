//! `durable`: acked publishes that the bus must keep. ArqonBus: a retained reality (the harness
//! first asks for its history; an error answer means the reality is not retained and the
//! target is reported as unsupported). NATS: a JetStream stream with file storage.

use std::collections::HashMap;
use std::future::IntoFuture;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use futures::stream::{FuturesUnordered, StreamExt};

use super::timed_bar;
use crate::driver::{arqon, nats, Names};
use crate::payload::{now_ns, Header};
use crate::placement::{connect_where, owner_shard};
use crate::report::DurableMetrics;
use crate::stats::Latency;
use crate::target::{Kind, Target};

#[derive(Debug, Clone)]
pub struct DurableSpec {
    pub payload_bytes: usize,
    pub duration: Duration,
    /// Stop after this many pulses per publisher, if that comes first.
    pub count: Option<u64>,
    /// Publishes each publisher has awaiting their ack at once.
    pub inflight: usize,
    /// Publishers, each on its own connection.
    pub publishers: usize,
    /// Realities (subjects) the publishers are spread over: publisher i uses number i mod R.
    pub realities: usize,
    /// ArqonBus: the retained reality to publish to (it must be configured retained); with
    /// several realities, `<reality>-<k>`.
    pub reality: String,
    /// ArqonBus: skip the check that the reality is retained, to measure acked publishes to an
    /// ephemeral reality beside the retained ones.
    pub any_reality: bool,
    /// ArqonBus: the server's shard count, to place each publisher's connection on a shard
    /// other than its reality's owner (0: no placement).
    pub cross_shard: u32,
    pub ack_timeout: Duration,
    pub progress: bool,
}

impl DurableSpec {
    /// The ArqonBus reality publisher `i` writes to.
    fn reality_of(&self, i: usize) -> String {
        if self.realities == 1 {
            self.reality.clone()
        } else {
            format!("{}-{}", self.reality, i % self.realities)
        }
    }
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
    /// The first failure's message.
    first_error: Option<String>,
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
            first_error: None,
        }
    }

    /// Adds another publisher's window: counts summed, the active window spanning both.
    fn merge(&mut self, other: Window) {
        self.acked += other.acked;
        self.failed += other.failed;
        self.sent += other.sent;
        self.latency.merge(&other.latency);
        self.first_ns = match self.first_ns {
            0 => other.first_ns,
            t => t.min(other.first_ns),
        };
        self.last_ack_ns = self.last_ack_ns.max(other.last_ack_ns);
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }

    fn metrics(&self, storage: String, spec: &DurableSpec) -> DurableMetrics {
        let ns = self.last_ack_ns.saturating_sub(self.first_ns);
        let bytes = self.acked * spec.payload_bytes.max(crate::payload::HEADER_BYTES) as u64;
        let (acked_per_s, mb_per_s) = super::rates(self.acked, bytes, ns);
        DurableMetrics {
            storage,
            inflight: spec.inflight,
            publishers: spec.publishers,
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

/// What one publisher's task ends with.
enum Ended {
    Done(Window),
    Unsupported(String),
}

/// Runs every publisher to its end and merges their windows; the first error or
/// `Unsupported` answers for the run.
async fn gather(
    tasks: Vec<tokio::task::JoinHandle<Result<Ended>>>,
    storage: String,
    spec: &DurableSpec,
    notes: &mut Vec<String>,
) -> Result<Outcome> {
    let mut w = Window::new();
    let mut outcome = None;
    for t in tasks {
        match t.await.context("a publisher task panicked")?? {
            Ended::Done(one) => w.merge(one),
            Ended::Unsupported(why) => outcome = outcome.or(Some(why)),
        }
    }
    if let Some(why) = outcome {
        return Ok(Outcome::Unsupported(why));
    }
    if let Some(e) = &w.first_error {
        notes.push(format!("{} publishes failed; the first: {e}", w.failed));
    }
    Ok(Outcome::Done(w.metrics(storage, spec)))
}

async fn run_arqon(
    target: &Target,
    spec: &DurableSpec,
    notes: &mut Vec<String>,
) -> Result<Outcome> {
    if !spec.any_reality {
        let mut session = arqon::connect(target.addr, None, "bench-durable").await?;
        for k in 0..spec.realities.min(spec.publishers) {
            let reality = spec.reality_of(k);
            if let Some(err) = session.history_probe(&reality, "bench.>").await? {
                return Ok(Outcome::Unsupported(format!(
                    "reality {reality:?} is not retained: HistoryGet was answered with {err}"
                )));
            }
        }
    }
    let deadline = now_ns() + spec.duration.as_nanos() as u64;
    let pb = timed_bar(spec.progress, spec.duration, "durable");
    let mut tasks = Vec::new();
    for i in 0..spec.publishers {
        let (addr, spec, pb) = (target.addr, spec.clone(), pb.clone());
        tasks.push(tokio::spawn(async move {
            let session = connect_placed(addr, i, &spec).await?;
            arqon_publisher(session, i, deadline, &spec, &pb).await
        }));
    }
    let storage = match spec.realities.min(spec.publishers) {
        1 => format!("ArqonBus reality {:?}", spec.reality),
        n => format!("ArqonBus realities {:?}-0..{}", spec.reality, n - 1),
    };
    let outcome = gather(tasks, storage, spec, notes).await;
    pb.finish_and_clear();
    outcome
}

/// Publisher `index`'s connection; with `cross_shard`, one that landed on a shard other than
/// its reality's owner.
async fn connect_placed(
    addr: SocketAddr,
    index: usize,
    spec: &DurableSpec,
) -> Result<arqon::Session> {
    let name = format!("bench-durable-{index}");
    if spec.cross_shard < 2 {
        return arqon::connect(addr, None, &name).await;
    }
    let reality = spec.reality_of(index);
    let owner = owner_shard(&reality, spec.cross_shard);
    connect_where(addr, &name, "", spec.cross_shard, |shard| shard != owner)
        .await
        .with_context(|| format!("placing publisher {index} off shard {owner}, the owner of {reality:?} (--cross-shard)"))
}

/// One ArqonBus publisher: keeps `inflight` acked publishes outstanding until the deadline.
/// Every ack already received is taken before the window is refilled, so the refill goes out
/// in one write, as a client library batching its sends would do it.
async fn arqon_publisher(
    session: arqon::Session,
    index: usize,
    deadline: u64,
    spec: &DurableSpec,
    pb: &indicatif::ProgressBar,
) -> Result<Ended> {
    let reality = spec.reality_of(index);
    let mut publisher = session.into_publisher(std::slice::from_ref(&reality), "bench-durable");
    let mut acks = publisher.take_acks().context("ack stream")?;
    let mut w = Window::new();
    let mut pending: HashMap<u64, u64> = HashMap::new();
    let limit = spec.count.unwrap_or(u64::MAX);
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
                    publisher: index as u32,
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
        let first = match tokio::time::timeout(spec.ack_timeout, acks.recv()).await {
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
        let mut next = Some(first);
        while let Some(ack) = next {
            if let Some(sent_at) = pending.remove(&ack.correlation_id) {
                match ack.result {
                    Ok(_) => {
                        w.acked += 1;
                        w.latency.record_ns(now - sent_at);
                        w.last_ack_ns = now;
                    }
                    Err(e) if w.acked == 0 => {
                        return Ok(Ended::Unsupported(format!(
                            "the first acked publish was answered with {e}"
                        )));
                    }
                    Err(e) => {
                        w.failed += 1;
                        w.first_error.get_or_insert_with(|| e.to_string());
                    }
                }
            }
            next = acks.try_recv().ok();
        }
        if index == 0 {
            pb.set_position(
                spec.duration
                    .as_millis()
                    .min(((now - w.first_ns) / 1_000_000) as u128) as u64,
            );
        }
    }
    Ok(Ended::Done(w))
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
    let used = spec
        .realities
        .min(spec.publishers)
        .min(names.realities.len());
    let subjects: Vec<String> = names.realities[..used]
        .iter()
        .map(|r| nats::subject(r))
        .collect();
    let stream_name = format!("ARQONBENCH_{}", names.realities[0].replace('.', "_")).to_uppercase();
    let created = js
        .create_stream(stream::Config {
            name: stream_name.clone(),
            subjects: subjects.clone(),
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
    let deadline = now_ns() + spec.duration.as_nanos() as u64;
    let pb = timed_bar(spec.progress, spec.duration, "durable");
    let mut tasks = Vec::new();
    for i in 0..spec.publishers {
        // Each publisher its own connection, as on ArqonBus.
        let (addr, spec, pb) = (target.addr, spec.clone(), pb.clone());
        let subject = subjects[i % used].clone();
        tasks.push(tokio::spawn(async move {
            let (client, _events) = nats::connect(addr, &format!("bench-durable-{i}")).await?;
            let js = jetstream::new(client);
            nats_publisher(&js, &subject, i, deadline, &spec, &pb).await
        }));
    }
    let outcome = gather(
        tasks,
        format!("JetStream file stream {stream_name}"),
        spec,
        notes,
    )
    .await;
    pb.finish_and_clear();
    if let Err(e) = js.delete_stream(&stream_name).await {
        notes.push(format!("could not delete the stream {stream_name}: {e}"));
    }
    outcome
}

async fn nats_publisher(
    js: &async_nats::jetstream::Context,
    subject: &str,
    index: usize,
    deadline: u64,
    spec: &DurableSpec,
    pb: &indicatif::ProgressBar,
) -> Result<Ended> {
    let mut w = Window::new();
    let mut pending = FuturesUnordered::new();
    let limit = spec.count.unwrap_or(u64::MAX);
    w.first_ns = now_ns();
    loop {
        while w.sent < limit && now_ns() < deadline && pending.len() < spec.inflight {
            let t = now_ns();
            let h = Header {
                publisher: index as u32,
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
            Ok(Err(e)) => {
                w.failed += 1;
                w.first_error.get_or_insert_with(|| e.to_string());
            }
            Err(_) => bail!("no JetStream ack within {:?}", spec.ack_timeout),
        }
        if index == 0 {
            pb.set_position(
                spec.duration
                    .as_millis()
                    .min(((now - w.first_ns) / 1_000_000) as u128) as u64,
            );
        }
    }
    Ok(Ended::Done(w))
}
