//! `types`: what SAM type enforcement costs the bus per pulse (docs/sam.md).
//!
//! One publisher sends ~1 KB pulses to one subscriber on the same bus in three modes:
//!
//! - **plain**: a session without a manifest;
//! - **relaxed**: an operator whose manifest's output schema covers the topic with the
//!   payload's type URL, so the bus compares type URLs on every publish;
//! - **strict**: the same manifest plus a `FileDescriptorSet` describing the payload's message,
//!   so the bus also decodes every payload (prost-reflect) and looks for undeclared fields at
//!   any depth.
//!
//! All three publish the very same bytes, a real `arqon.bench.Reading` (scalars, a string, a
//! nested message, repeated nested messages and a packed repeated double filling the rest of
//! the size), so the check is the only difference. The harness's 40-byte header rides in the
//! message's first field (`bytes header = 1`, bytes 2..42 of the encoding), which is all the
//! subscriber reads.
//!
//! Modes alternate over rounds (round r runs them rotated by r), each phase on fresh
//! connections. Before measuring, each phase proves its mode with three acked probes on another
//! covered topic: a wrong type URL (refused unless plain), a payload with an undeclared field
//! (refused only when strict) and a valid one (accepted by all). Then for the phase: delivered
//! pulses/s and the server's CPU time per published pulse (summed from its threads' schedstat,
//! in nanoseconds), gross and net of the server's idle CPU. The cost of relaxed and strict is
//! their net CPU per pulse minus plain's in the same round, reported as the median and range
//! over rounds. Every pulse must arrive exactly once and none may be refused, else the run
//! fails.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use arqonbus_proto::v1::{OperatorManifest, SchemaRef};
use tokio::sync::watch;

use super::{drain, timed_bar};
use crate::driver::arqon::{self, Incoming};
use crate::payload::{now_ns, Header, HEADER_BYTES};
pub use crate::reading::{
    descriptor_set, template, Template, HEADER_FIELD_PREFIX, MESSAGE_NAME, TYPE_URL,
};
use crate::report::{Spread, TypesCost, TypesMetrics, TypesModeSummary, TypesPhase};
use crate::schedule::OpenLoop;
use crate::stats::LossTracker;
use crate::sys::{process_cpu_ns_from_ticks, CpuSnapshot, ThreadCpu};
use crate::target::Target;

/// The measured topic; the subscriber takes only this one.
pub const TOPIC: &str = "bench.types.pulse";
/// Where the probes go: covered by the same schema, subscribed by no one.
pub const PROBE_TOPIC: &str = "bench.types.probe";
/// The output schema's pattern: covers both topics.
pub const SCHEMA_PATTERN: &str = "bench.types.>";
/// A type URL the manifest does not declare (for the wrong-type probe).
const UNDECLARED_TYPE_URL: &str = "type.googleapis.com/arqon.bench.Other";
/// Field 15, varint 1: a field `arqon.bench.Reading` does not declare.
const UNDECLARED_FIELD: [u8; 2] = [15 << 3, 0x01];
/// How long a probe may wait for its answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the server's idle CPU is measured before the phases.
const IDLE_PROBE: Duration = Duration::from_secs(1);
/// Pulses sent between two flushes when the sender is behind (or flat out).
const MAX_BURST: u64 = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Plain,
    Relaxed,
    Strict,
}

impl Mode {
    pub const ALL: [Mode; 3] = [Mode::Plain, Mode::Relaxed, Mode::Strict];

    pub fn name(self) -> &'static str {
        match self {
            Mode::Plain => "plain",
            Mode::Relaxed => "relaxed",
            Mode::Strict => "strict",
        }
    }

    /// The Hello manifest of the publisher in this mode (none when plain).
    fn manifest(self) -> Option<OperatorManifest> {
        let relaxed = OperatorManifest {
            name: "bench-types".into(),
            version: "1".into(),
            output_schemas: vec![SchemaRef {
                topic_pattern: SCHEMA_PATTERN.into(),
                type_url: TYPE_URL.into(),
            }],
            ..Default::default()
        };
        match self {
            Mode::Plain => None,
            Mode::Relaxed => Some(relaxed),
            Mode::Strict => Some(OperatorManifest {
                descriptor_set: descriptor_set().into(),
                ..relaxed
            }),
        }
    }
}

impl Template {
    /// The payload of one pulse: the template with `h` in its header field.
    fn with_header(&self, h: &Header, out: &mut Vec<u8>) {
        out.clear();
        out.extend_from_slice(&self.bytes);
        let mut slot: &mut [u8] = &mut out[2..2 + HEADER_BYTES];
        h.write(&mut slot, HEADER_BYTES);
    }
}

/// The harness header of a delivered `Reading`; `None` when the payload is not one.
fn read_header(payload: &[u8]) -> Option<Header> {
    if payload.len() < 2 + HEADER_BYTES || payload[..2] != HEADER_FIELD_PREFIX {
        return None;
    }
    Header::read(&payload[2..2 + HEADER_BYTES])
}

#[derive(Debug, Clone)]
pub struct TypesSpec {
    /// Pulses per second on an open-loop schedule; 0 publishes as fast as the bus takes them.
    pub rate_per_s: u64,
    pub payload_bytes: usize,
    /// Of each phase (one mode in one round).
    pub duration: Duration,
    pub rounds: u32,
    pub drain_timeout: Duration,
    pub server_pid: Option<u32>,
    pub progress: bool,
}

pub async fn run(
    target: &Target,
    reality: &str,
    spec: &TypesSpec,
    notes: &mut Vec<String>,
) -> Result<TypesMetrics> {
    let template = template(spec.payload_bytes).map_err(anyhow::Error::msg)?;
    let mut m = TypesMetrics {
        rate_per_s: spec.rate_per_s,
        payload_bytes: template.bytes.len(),
        message_type: MESSAGE_NAME.to_string(),
        samples_per_payload: template.samples,
        descriptor_set_bytes: descriptor_set().len(),
        rounds: spec.rounds,
        phase_secs: spec.duration.as_secs_f64(),
        ..Default::default()
    };
    if spec.server_pid.is_none() {
        notes.push(
            "no --server-pid: the server's CPU per pulse (and so the cost) is not measured".into(),
        );
    }
    // What the server burns doing nothing, so per-pulse figures can be read net of it.
    let idle_before = server_cpu(spec.server_pid);
    let idle_at = std::time::Instant::now();
    tokio::time::sleep(IDLE_PROBE).await;
    let idle = idle_before.zip(server_cpu(spec.server_pid));
    if let Some((a, b)) = &idle {
        let (ns, _) = a.ns_until(b);
        m.server_idle_cores = Some(ns as f64 / 1e9 / idle_at.elapsed().as_secs_f64());
    }
    let mut sources = Vec::new();
    for round in 0..spec.rounds {
        for position in 0..Mode::ALL.len() {
            let mode = Mode::ALL[(position + round as usize) % Mode::ALL.len()];
            let id = m.phases.len() as u32;
            let (phase, source) = run_phase(target, reality, spec, &template, mode, id, &m)
                .await
                .with_context(|| format!("round {}, {} phase", round + 1, mode.name()))?;
            sources.extend(source);
            m.phases.push(TypesPhase {
                round: round + 1,
                position: position as u32 + 1,
                ..phase
            });
        }
    }
    sources.sort_unstable();
    sources.dedup();
    m.server_cpu_source = sources.join(" and ");
    if sources.len() > 1 {
        notes.push(
            "a server thread exited during some phase: those phases' CPU is from 10 ms ticks"
                .into(),
        );
    }
    m.summarize();
    for p in &m.phases {
        if !p.complete() {
            notes.push(format!(
                "round {} {}: published {}, delivered {}, lost {} ({} announced as shed), \
                 duplicates {}, from another phase or not a Reading {}, refused by the bus {}{}{}",
                p.round,
                p.mode,
                p.published,
                p.delivered,
                p.lost,
                p.dropped_notices,
                p.duplicates,
                p.unexpected + p.foreign,
                p.refused,
                p.last_refusal
                    .as_ref()
                    .map(|e| format!(" (last: {e})"))
                    .unwrap_or_default(),
                p.subscriber_error
                    .as_ref()
                    .map(|e| format!("; the subscriber: {e}"))
                    .unwrap_or_default()
            ));
        }
    }
    Ok(m)
}

/// The server's CPU counters: per-thread schedstat, with the tick count as a fallback.
struct ServerCpu {
    threads: Option<ThreadCpu>,
    ticks_ns: u64,
}

fn server_cpu(pid: Option<u32>) -> Option<ServerCpu> {
    let pid = pid?;
    Some(ServerCpu {
        threads: ThreadCpu::take(pid),
        ticks_ns: process_cpu_ns_from_ticks(pid)?,
    })
}

impl ServerCpu {
    /// Nanoseconds of CPU from `self` to `later`, and where they were read from.
    fn ns_until(&self, later: &ServerCpu) -> (u64, &'static str) {
        match (&self.threads, &later.threads) {
            (Some(a), Some(b)) => match a.ns_until(b) {
                Some(ns) => (ns, "schedstat"),
                None => (later.ticks_ns.saturating_sub(self.ticks_ns), "ticks"),
            },
            _ => (later.ticks_ns.saturating_sub(self.ticks_ns), "ticks"),
        }
    }
}

/// What the subscriber saw in one phase.
struct Seen {
    tracker: LossTracker,
    first_ns: u64,
    last_ns: u64,
    foreign: u64,
    dropped_notices: u64,
    server_error: Option<String>,
    failure: Option<String>,
}

async fn run_phase(
    target: &Target,
    reality: &str,
    spec: &TypesSpec,
    template: &Template,
    mode: Mode,
    id: u32,
    m: &TypesMetrics,
) -> Result<(TypesPhase, Option<&'static str>)> {
    let name = mode.name();
    let mut session = arqon::connect(target.addr, None, &format!("bench-types-sub-{name}"))
        .await
        .context("connecting the subscriber")?;
    session.subscribe(&[reality.to_string()], TOPIC).await?;
    let sub = session.into_subscriber();
    let routes = [
        (reality.to_string(), TOPIC.to_string()),
        (reality.to_string(), PROBE_TOPIC.to_string()),
    ];
    let client_name = format!("bench-types-pub-{name}");
    let session = match mode.manifest() {
        None => arqon::connect(target.addr, None, &client_name).await,
        Some(manifest) => {
            arqon::connect_with_manifest(target.addr, None, &client_name, manifest).await
        }
    }
    .context("connecting the publisher")?;
    let mut publisher = session.into_publisher_on(&routes, "bench-types");
    let probes = probe(&mut publisher, template, mode).await?;
    let errors_before = publisher.answers().errors.load(Ordering::Relaxed);

    let (stop_tx, stop_rx) = watch::channel(false);
    let accounted = Arc::new(AtomicU64::new(0));
    let task = tokio::spawn(receive(sub, stop_rx, accounted.clone()));
    let pb = timed_bar(spec.progress, spec.duration, name);
    let cpu_before = CpuSnapshot::take(spec.server_pid);
    let server_before = server_cpu(spec.server_pid);
    let sent = send(&mut publisher, template, spec, id).await?;
    pb.set_prefix("draining");
    drain(&[accounted], sent.count, spec.drain_timeout, || {
        task.is_finished()
    })
    .await;
    let cpu_after = CpuSnapshot::take(spec.server_pid);
    let server_after = server_cpu(spec.server_pid);
    let _ = stop_tx.send(true);
    pb.finish_and_clear();
    // Let answers to the last publishes (a refusal, if any) reach the reader task.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let refused = publisher.answers().errors.load(Ordering::Relaxed) - errors_before;
    let last_refusal = publisher
        .answers()
        .last_error
        .lock()
        .expect("not poisoned")
        .clone();
    drop(publisher);
    let seen = task.await.context("the subscriber task panicked")?;

    let mut sent_by_id = vec![0u64; id as usize + 1];
    sent_by_id[id as usize] = sent.count;
    let loss = seen.tracker.report(&sent_by_id);
    let mut p = TypesPhase {
        mode: name.to_string(),
        probes,
        published: sent.count,
        publish_secs: sent.secs,
        publish_msgs_per_s: if sent.secs > 0.0 {
            sent.count as f64 / sent.secs
        } else {
            0.0
        },
        max_sender_lag_us: sent.max_lag_ns as f64 / 1e3,
        delivered: loss.received,
        lost: loss.lost,
        duplicates: loss.duplicates,
        unexpected: loss.unexpected,
        foreign: seen.foreign,
        dropped_notices: seen.dropped_notices,
        refused,
        last_refusal: (refused > 0)
            .then(|| last_refusal.map(|e| e.to_string()))
            .flatten(),
        subscriber_error: seen.server_error.or(seen.failure),
        ..Default::default()
    };
    if seen.last_ns > seen.first_ns {
        p.delivery_secs = (seen.last_ns - seen.first_ns) as f64 / 1e9;
        p.deliveries_per_s = p.delivered as f64 / p.delivery_secs;
    }
    let mut source = None;
    if let (Some(a), Some(b), Some(sa), Some(sb)) =
        (cpu_before, cpu_after, server_before, server_after)
    {
        let usage = a.until(&b);
        let window_s = a.secs_until(&b);
        let (ns, from) = sa.ns_until(&sb);
        source = Some(from);
        p.harness_cores = Some(usage.harness);
        p.server_cores = Some(ns as f64 / 1e9 / window_s);
        if sent.count > 0 {
            p.server_cpu_ns_per_pulse = Some(ns as f64 / sent.count as f64);
            if let Some(idle) = m.server_idle_cores {
                let net = (ns as f64 - idle * window_s * 1e9).max(0.0);
                p.server_net_cpu_ns_per_pulse = Some(net / sent.count as f64);
            }
        }
        p.other_cores = Some(usage.other);
    }
    Ok((p, source))
}

/// Sends three acked probes on [`PROBE_TOPIC`] and checks the bus answers them as `mode`
/// should: a wrong type URL is refused unless plain, an undeclared field only when strict, a
/// valid Reading never. Returns the answers as text for the report.
async fn probe(
    publisher: &mut arqon::Publisher,
    template: &Template,
    mode: Mode,
) -> Result<String> {
    let mut acks = publisher.take_acks().context("the ack stream")?;
    let valid = template.bytes.clone();
    let with_undeclared = [&template.bytes[..], &UNDECLARED_FIELD].concat();
    let cases = [
        (
            "wrong type URL",
            UNDECLARED_TYPE_URL,
            valid.clone(),
            mode == Mode::Plain,
        ),
        (
            "undeclared field",
            TYPE_URL,
            with_undeclared,
            mode != Mode::Strict,
        ),
        ("valid Reading", TYPE_URL, valid, true),
    ];
    let mut answers = Vec::new();
    for (what, type_url, bytes, accepted) in cases {
        let corr = publisher
            .send_with(1, true, |msg| {
                if let Some(any) = msg.payload.as_mut() {
                    any.type_url = type_url.to_string();
                    any.value = bytes;
                }
            })
            .await?;
        publisher.flush().await?;
        let ack = loop {
            let ack = tokio::time::timeout(PROBE_TIMEOUT, acks.recv())
                .await
                .with_context(|| {
                    format!("no answer to the `{what}` probe within {PROBE_TIMEOUT:?}")
                })?
                .context("the publisher's connection ended")?;
            if ack.correlation_id == corr {
                break ack;
            }
        };
        let answer = match &ack.result {
            Ok(_) => "accepted".to_string(),
            Err(e) => e.name.clone(),
        };
        let as_expected = match &ack.result {
            Ok(_) => accepted,
            Err(e) => !accepted && e.name == "TYPE_MISMATCH",
        };
        if !as_expected {
            bail!(
                "the `{what}` probe was {} by a {} session, where it should have been {}: this \
                 server does not enforce the mode being measured{}",
                if ack.result.is_ok() {
                    "accepted"
                } else {
                    "refused"
                },
                mode.name(),
                if accepted {
                    "accepted"
                } else {
                    "refused with TYPE_MISMATCH"
                },
                match &ack.result {
                    Err(e) => format!(" ({e})"),
                    Ok(_) => String::new(),
                }
            );
        }
        answers.push(format!("{what}: {answer}"));
    }
    Ok(answers.join(", "))
}

struct Sent {
    count: u64,
    /// From the first publish to the last one written.
    secs: f64,
    max_lag_ns: u64,
}

/// Publishes the phase's pulses on route 0: on the open-loop schedule, or flat out for the
/// phase's duration when the rate is 0. Pulse `i` carries publisher `id`, sequence `i`.
async fn send(
    publisher: &mut arqon::Publisher,
    template: &Template,
    spec: &TypesSpec,
    id: u32,
) -> Result<Sent> {
    let start = now_ns() + 1_000_000;
    let duration_ns = spec.duration.as_nanos() as u64;
    let scheduled = if spec.rate_per_s == 0 {
        u64::MAX
    } else {
        ((spec.duration.as_secs_f64() * spec.rate_per_s as f64).round() as u64).max(1)
    };
    let mut schedule =
        (spec.rate_per_s > 0).then(|| OpenLoop::new(start, spec.rate_per_s, scheduled));
    let give_up = start + duration_ns + 10_000_000_000;
    let mut payload = Vec::with_capacity(template.bytes.len());
    let (mut count, mut first, mut last, mut max_lag) = (0u64, 0u64, 0u64, 0u64);
    loop {
        let now = now_ns();
        let due = match schedule.as_mut() {
            Some(s) => {
                let Some(wait) = s.wait_ns(now) else { break };
                if wait > 0 {
                    tokio::time::sleep(Duration::from_nanos(wait)).await;
                    continue;
                }
                if now > give_up {
                    bail!("the sender was still behind schedule 10 s after its end ({count} of {scheduled} sent)");
                }
                max_lag = max_lag.max(s.lag_ns(now));
                s.due(now, MAX_BURST)
            }
            None if now >= start + duration_ns => break,
            None => count..count + MAX_BURST,
        };
        for seq in due {
            let t = now_ns();
            let h = Header {
                publisher: id,
                seq,
                reality: 0,
                flags: 0,
                intended_ns: schedule.as_ref().map_or(t, |s| s.intended_ns(seq)),
                sent_ns: t,
            };
            template.with_header(&h, &mut payload);
            publisher
                .send_with(0, false, |msg| {
                    if let Some(any) = msg.payload.as_mut() {
                        any.type_url = TYPE_URL.to_string();
                        any.value.extend_from_slice(&payload);
                    }
                })
                .await?;
            if first == 0 {
                first = t;
            }
            last = t;
            count += 1;
        }
        publisher.flush().await?;
    }
    Ok(Sent {
        count,
        secs: last.saturating_sub(first) as f64 / 1e9,
        max_lag_ns: max_lag,
    })
}

async fn receive(
    mut sub: arqon::Subscriber,
    mut stop: watch::Receiver<bool>,
    accounted: Arc<AtomicU64>,
) -> Seen {
    let mut seen = Seen {
        tracker: LossTracker::default(),
        first_ns: 0,
        last_ns: 0,
        foreign: 0,
        dropped_notices: 0,
        server_error: None,
        failure: None,
    };
    let mut distinct = 0u64;
    loop {
        let ev = tokio::select! {
            biased;
            _ = stop.changed() => break,
            ev = sub.next_incoming() => ev,
        };
        match ev {
            Ok(Incoming::Deliver { payload, .. }) => {
                let now = now_ns();
                let Some(h) = read_header(&payload) else {
                    seen.foreign += 1;
                    continue;
                };
                if seen.tracker.observe(h.publisher, h.reality, h.seq) {
                    distinct += 1;
                }
                accounted.store(distinct + seen.dropped_notices, Ordering::Relaxed);
                if seen.first_ns == 0 {
                    seen.first_ns = now;
                }
                seen.last_ns = now;
            }
            Ok(Incoming::Dropped { count, .. }) => {
                seen.dropped_notices += count;
                accounted.store(distinct + seen.dropped_notices, Ordering::Relaxed);
            }
            Ok(Incoming::ServerError(e)) => seen.server_error = Some(e.to_string()),
            Ok(Incoming::Other) => {}
            Ok(Incoming::Closed) => {
                if !*stop.borrow() {
                    seen.failure = Some("the server closed the subscriber's connection".into());
                }
                break;
            }
            Err(e) => {
                seen.failure = Some(format!("{e:#}"));
                break;
            }
        }
    }
    seen
}

impl TypesMetrics {
    /// Fills the per-mode summaries and the costs over plain from the phases.
    pub fn summarize(&mut self) {
        let by_mode = |mode: &str, f: fn(&TypesPhase) -> Option<f64>| -> Vec<(u32, f64)> {
            self.phases
                .iter()
                .filter(|p| p.mode == mode)
                .filter_map(|p| f(p).map(|v| (p.round, v)))
                .collect()
        };
        let values = |v: &[(u32, f64)]| v.iter().map(|&(_, x)| x).collect::<Vec<_>>();
        self.modes = Mode::ALL
            .iter()
            .map(|mode| TypesModeSummary {
                mode: mode.name().to_string(),
                deliveries_per_s: Spread::of(values(&by_mode(mode.name(), |p| {
                    Some(p.deliveries_per_s)
                }))),
                server_cpu_ns_per_pulse: Spread::of(values(&by_mode(mode.name(), |p| {
                    p.server_cpu_ns_per_pulse
                }))),
                server_net_cpu_ns_per_pulse: Spread::of(values(&by_mode(mode.name(), |p| {
                    p.server_net_cpu_ns_per_pulse
                }))),
            })
            .collect();
        let plain = by_mode("plain", |p| p.server_net_cpu_ns_per_pulse);
        self.costs = [Mode::Relaxed, Mode::Strict]
            .iter()
            .filter_map(|mode| {
                let diffs: Vec<f64> = by_mode(mode.name(), |p| p.server_net_cpu_ns_per_pulse)
                    .iter()
                    .filter_map(|&(round, v)| {
                        plain
                            .iter()
                            .find(|&&(r, _)| r == round)
                            .map(|&(_, base)| v - base)
                    })
                    .collect();
                Some(TypesCost {
                    mode: mode.name().to_string(),
                    ns_per_pulse_over_plain: Spread::of(diffs)?,
                })
            })
            .collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost_reflect::{DescriptorPool, DynamicMessage, Value};

    fn no_unknown_fields(m: &DynamicMessage) -> bool {
        m.unknown_fields().next().is_none()
            && m.fields().all(|(_, v)| match v {
                Value::Message(inner) => no_unknown_fields(inner),
                Value::List(items) => items
                    .iter()
                    .all(|i| i.as_message().is_none_or(no_unknown_fields)),
                _ => true,
            })
    }

    #[test]
    fn the_shared_header_size_is_the_harness_header() {
        assert_eq!(crate::reading::HEADER_BYTES, HEADER_BYTES);
    }

    #[test]
    fn the_payload_is_a_reading_as_the_descriptor_set_describes_it() {
        let t = template(1024).unwrap();
        assert!((1017..=1024).contains(&t.bytes.len()), "{}", t.bytes.len());
        assert!(t.samples > 100, "{}", t.samples);
        let pool = DescriptorPool::decode(descriptor_set().as_slice()).unwrap();
        let desc = pool.get_message_by_name(MESSAGE_NAME).unwrap();
        let h = Header {
            publisher: 4,
            seq: 123_456,
            reality: 0,
            flags: 0,
            intended_ns: 11,
            sent_ns: 12,
        };
        let mut payload = Vec::new();
        t.with_header(&h, &mut payload);
        assert_eq!(payload.len(), t.bytes.len());
        let m = DynamicMessage::decode(desc.clone(), payload.as_slice()).unwrap();
        assert!(no_unknown_fields(&m));
        assert_eq!(
            m.get_field_by_name("samples")
                .unwrap()
                .as_list()
                .unwrap()
                .len(),
            t.samples
        );
        assert_eq!(
            m.get_field_by_name("tags")
                .unwrap()
                .as_list()
                .unwrap()
                .len(),
            2
        );
        let window = m.get_field_by_name("window").unwrap();
        let unit = window
            .as_message()
            .unwrap()
            .get_field_by_name("unit")
            .unwrap();
        assert_eq!(unit.as_str(), Some("V"));
        // The same bytes decode with prost as the struct, and the header reads back.
        use prost::Message;
        let r = crate::reading::Reading::decode(payload.as_slice()).unwrap();
        assert_eq!(r.samples.len(), t.samples);
        assert_eq!(read_header(&payload), Some(h));

        // The undeclared-field probe really carries one.
        let bad = [&t.bytes[..], &UNDECLARED_FIELD].concat();
        let m = DynamicMessage::decode(desc, bad.as_slice()).unwrap();
        assert_eq!(m.unknown_fields().next().map(|f| f.number()), Some(15));
    }

    #[test]
    fn payloads_too_small_for_a_reading_are_refused() {
        let err = template(100).unwrap_err();
        assert!(err.contains("--payload-bytes must be at least"), "{err}");
        assert_eq!(read_header(&[0u8; 50]), None);
    }

    #[test]
    fn costs_are_differences_within_a_round() {
        let phase = |round, mode: &str, ns| TypesPhase {
            round,
            mode: mode.into(),
            server_net_cpu_ns_per_pulse: Some(ns),
            ..Default::default()
        };
        let mut m = TypesMetrics {
            phases: vec![
                phase(1, "plain", 1_000.0),
                phase(1, "relaxed", 1_050.0),
                phase(1, "strict", 3_000.0),
                phase(2, "relaxed", 1_300.0),
                phase(2, "strict", 3_600.0),
                phase(2, "plain", 1_200.0),
                phase(3, "strict", 2_600.0),
                phase(3, "plain", 900.0),
                phase(3, "relaxed", 980.0),
            ],
            ..Default::default()
        };
        m.summarize();
        let strict = &m
            .costs
            .iter()
            .find(|c| c.mode == "strict")
            .unwrap()
            .ns_per_pulse_over_plain;
        assert_eq!(
            (strict.median, strict.min, strict.max),
            (2_000.0, 1_700.0, 2_400.0)
        );
        let relaxed = &m
            .costs
            .iter()
            .find(|c| c.mode == "relaxed")
            .unwrap()
            .ns_per_pulse_over_plain;
        assert_eq!(
            (relaxed.median, relaxed.min, relaxed.max),
            (80.0, 50.0, 100.0)
        );
    }
}
