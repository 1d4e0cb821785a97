//! `spectral` (US-05): N agents, each publishing a spectral pulse (coherence, criticality,
//! eigenvalues) every `interval` on one open-loop schedule into one reality, while a background
//! publisher pushes 1 KB pulses on another topic to a subscriber of its own. Subscribers of the
//! spectral topic measure every pulse from its intended send time and check that its spectral
//! metadata arrived intact.
//!
//! The agents' pulses are staggered evenly over the interval: pulse `j` of the merged schedule
//! (rate `agents / interval`) belongs to agent `j % agents`, which therefore sends exactly every
//! `interval`. One sender thread drives all agents (as in `latency`), each agent on its own
//! connection. ArqonBus carries the metadata in `ArqonMessage.spectral`; NATS, which has no such
//! field, carries the same encoded message after the harness header in the payload.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use arqonbus_proto::v1::{server_frame, SpectralMetadata};
use bytes::Bytes;
use futures::future::try_join_all;
use tokio::sync::{watch, Barrier};

use super::flow::{note_named_subscriber_trouble, note_trouble, publish, FlowSpec};
use super::{drain, rates, run_subscriber, timed_bar, unit_f64};
use crate::driver::{arqon, nats, Names, Publisher, Subscriber, Trouble};
use crate::payload::{now_ns, read_spectral, Header, FLAG_WARMUP};
use crate::report::SpectralMetrics;
use crate::schedule::OpenLoop;
use crate::stats::{Latency, LossTracker, Timeline};
use crate::sys::set_thread_timer_slack_ns;
use crate::target::{Kind, Target};

/// The topic of the agents' spectral pulses (ArqonBus); NATS subject `<reality>.spectral`.
pub const SPECTRAL_TOPIC: &str = "bench.spectral.pulse";

#[derive(Debug, Clone)]
pub struct SpectralSpec {
    pub agents: usize,
    /// Each agent sends one pulse per interval.
    pub interval: Duration,
    pub payload_bytes: usize,
    pub eigenvalues: usize,
    pub subscribers: usize,
    /// Measured part of the run; the warm-up comes before it.
    pub duration: Duration,
    pub warmup: Duration,
    /// At most this many agent pulses (all agents together), if it comes before the duration.
    pub count: Option<u64>,
    /// Background pulses per second; 0 is flat out; `None` runs no background load.
    pub background_rate: Option<u64>,
    pub background_payload_bytes: usize,
    /// Background on a reality of its own (default: the spectral reality, another topic).
    pub background_own_reality: bool,
    pub drain_timeout: Duration,
    pub progress: bool,
}

impl SpectralSpec {
    /// Pulses per second of all agents together.
    pub fn rate_per_s(&self) -> u64 {
        ((self.agents as f64 / self.interval.as_secs_f64()).round() as u64).max(1)
    }
}

/// The metadata agent `agent` attaches to its pulse `seq`: a pure function of both, so a
/// subscriber can check what arrived bit for bit.
pub fn spectral_of(agent: u32, seq: u64, eigenvalues: usize) -> SpectralMetadata {
    let key = (u64::from(agent) << 40) ^ seq;
    SpectralMetadata {
        coherence: unit_f64(key),
        criticality: unit_f64(key ^ 0x5bd1_e995_0000_0000),
        eigenvalues: (0..eigenvalues as u64)
            .map(|k| 4.0 * unit_f64(key.wrapping_add((k + 1) << 52)) - 2.0)
            .collect(),
    }
}

/// The most pulses sent in one burst before looking at the clock again.
const MAX_BURST: u64 = 256;
/// A sender still behind this long after its schedule ends gives up on the rest.
const GIVE_UP_AFTER_END: Duration = Duration::from_secs(10);

struct SenderStats {
    sent: u64,
    warmup_sent: u64,
    per_agent: Vec<u64>,
    max_lag_ns: u64,
    lateness: Latency,
    failure: Option<String>,
}

/// What one spectral subscriber saw.
struct SpectralSub {
    tracker: LossTracker,
    from_intended: Latency,
    from_send: Latency,
    timeline: Timeline,
    dropped_notices: u64,
    /// Pulses whose spectral metadata was missing or not what the agent sent.
    spectral_mismatches: u64,
    first_mismatch: Option<String>,
    foreign: u64,
    server_errors: u64,
    last_server_error: Option<String>,
    failure: Option<String>,
    closed_early: bool,
    trouble: Trouble,
}

pub async fn run(
    target: &Target,
    names: &Names,
    spec: &SpectralSpec,
    notes: &mut Vec<String>,
) -> Result<SpectralMetrics> {
    let reality = names.realities[0].clone();
    let bg_reality = if spec.background_own_reality {
        format!("{reality}-bg")
    } else {
        reality.clone()
    };
    let bg_names = Names {
        realities: vec![bg_reality],
        tag: names.tag.clone(),
    };

    let subs =
        try_join_all(
            (0..spec.subscribers).map(|i| {
                let reality = reality.clone();
                async move {
                    connect_spectral_sub(target, &reality, &format!("bench-spec-sub-{i}")).await
                }
            }),
        )
        .await
        .context("connecting spectral subscribers")?;
    let agents = try_join_all((0..spec.agents).map(|i| {
        let reality = reality.clone();
        async move { connect_agent(target, &reality, &format!("bench-agent-{i}")).await }
    }))
    .await
    .context("connecting the agents")?;
    let background = match spec.background_rate {
        Some(_) => Some((
            Subscriber::connect(target, &bg_names, "bench-bg-sub")
                .await
                .context("connecting the background subscriber")?,
            Publisher::connect(target, &bg_names, "bench-bg-pub")
                .await
                .context("connecting the background publisher")?,
        )),
        None => None,
    };

    let (stop_tx, stop_rx) = watch::channel(false);
    let received: Vec<Arc<AtomicU64>> = (0..spec.subscribers)
        .map(|_| Arc::new(AtomicU64::new(0)))
        .collect();
    let eig = spec.eigenvalues;
    let sub_tasks: Vec<_> = subs
        .into_iter()
        .zip(&received)
        .map(|(s, r)| tokio::spawn(run_spectral_sub(s, stop_rx.clone(), r.clone(), eig)))
        .collect();

    let total = spec.warmup + spec.duration;
    let bg_task = background.map(|(sub, publisher)| {
        let accounted = Arc::new(AtomicU64::new(0));
        let sub_task = tokio::spawn(run_subscriber(
            sub,
            stop_rx.clone(),
            accounted.clone(),
            false,
        ));
        let flow = FlowSpec {
            publishers: 1,
            subscribers: 1,
            rate_per_publisher: spec.background_rate.unwrap_or(0),
            payload_bytes: spec.background_payload_bytes,
            duration: total,
            count_per_publisher: None,
            drain_timeout: spec.drain_timeout,
            progress: false,
        };
        let pub_task = tokio::spawn(publish(
            publisher,
            0,
            1,
            flow,
            Arc::new(AtomicU64::new(0)),
            Arc::new(Barrier::new(1)),
        ));
        (pub_task, sub_task, accounted)
    });

    let rate = spec.rate_per_s();
    let scheduled = ((total.as_secs_f64() * rate as f64).round() as u64)
        .min(spec.count.unwrap_or(u64::MAX))
        .max(1);
    let sent_counter = Arc::new(AtomicU64::new(0));
    let pb = timed_bar(spec.progress, total, "spectral");
    let ticker = {
        let (pb, sent, received) = (pb.clone(), sent_counter.clone(), received.clone());
        let start = tokio::time::Instant::now();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                pb.set_position(start.elapsed().as_millis() as u64);
                let r: u64 = received.iter().map(|c| c.load(Ordering::Relaxed)).sum();
                pb.set_message(format!(
                    "sent {}, accounted for {r}",
                    sent.load(Ordering::Relaxed)
                ));
            }
        })
    };
    let handle = tokio::runtime::Handle::current();
    let sender_spec = spec.clone();
    let sender = std::thread::Builder::new()
        .name("spectral-sender".into())
        .spawn(move || send_on_schedule(handle, agents, sender_spec, scheduled, sent_counter))
        .context("starting the sender thread")?;
    let (stats, agents) = tokio::task::spawn_blocking(move || sender.join())
        .await
        .context("joining the sender")?
        .map_err(|_| anyhow!("the sender thread panicked"))?;

    let bg = match bg_task {
        Some((pub_task, sub_task, accounted)) => {
            let outcome = pub_task.await.context("background publisher panicked")??;
            Some((outcome, sub_task, accounted))
        }
        None => None,
    };
    pb.set_prefix("draining");
    let bg_expected = bg.as_ref().map(|b| b.0.sent).unwrap_or(0);
    let mut counters = received.clone();
    if let Some(b) = &bg {
        counters.push(b.2.clone());
    }
    // Spectral subscribers expect every agent's pulses; the background subscriber its own.
    let spectral_expected = stats.sent;
    drain_mixed(
        &received,
        spectral_expected,
        bg.as_ref().map(|b| (&b.2, bg_expected)),
        spec.drain_timeout,
        || sub_tasks.iter().all(|t| t.is_finished()),
    )
    .await;
    let _ = stop_tx.send(true);
    ticker.abort();
    pb.finish_and_clear();
    let mut subs_out = Vec::new();
    for t in sub_tasks {
        subs_out.push(t.await.context("subscriber task panicked")?);
    }

    let mut m = SpectralMetrics {
        agents: spec.agents,
        interval_ms: spec.interval.as_secs_f64() * 1e3,
        rate_per_s: rate,
        eigenvalues: spec.eigenvalues,
        scheduled,
        sent: stats.sent,
        not_sent: scheduled - stats.sent,
        warmup_sent: stats.warmup_sent,
        max_sender_lag_us: stats.max_lag_ns as f64 / 1e3,
        send_lateness: stats.lateness.summary(),
        subscribers: spec.subscribers,
        ..Default::default()
    };
    let mut from_intended = Latency::new();
    let mut from_send = Latency::new();
    let mut timeline = Timeline::default();
    for (i, s) in subs_out.iter().enumerate() {
        let loss = s.tracker.report(&stats.per_agent);
        m.expected += loss.expected;
        m.received += loss.received;
        m.lost += loss.lost;
        m.duplicates += loss.duplicates;
        m.out_of_order += loss.out_of_order;
        m.dropped_notices += s.dropped_notices;
        m.spectral_mismatches += s.spectral_mismatches;
        from_intended.merge(&s.from_intended);
        from_send.merge(&s.from_send);
        timeline.merge(&s.timeline);
        note_spectral_sub(i, s, loss.unexpected, notes);
    }
    m.from_intended = from_intended.summary();
    m.from_send = from_send.summary();
    m.curve_from_intended = from_intended.curve();
    m.curve_from_send = from_send.curve();
    m.timeline = timeline.windows();
    for (i, a) in agents.iter().enumerate() {
        note_trouble(&format!("agent {i}"), &a.trouble(), notes);
    }

    if let Some((outcome, sub_task, _)) = bg {
        let sub = sub_task
            .await
            .context("background subscriber task panicked")?;
        let loss = sub.tracker.report(&[outcome.sent]);
        let span = outcome.end_ns.saturating_sub(outcome.first_ns);
        m.background_rate_per_s = spec.background_rate;
        m.background_published = outcome.sent;
        m.background_publish_msgs_per_s = rates(outcome.sent, 0, span).0;
        m.background_received = loss.received;
        m.background_lost = loss.lost;
        m.background_dropped_notices = sub.dropped_notices;
        m.background_deliveries_per_s =
            rates(loss.received, 0, sub.last_ns.saturating_sub(sub.first_ns)).0;
        note_named_subscriber_trouble("background subscriber", &sub, loss.unexpected, notes);
        note_trouble("background publisher", &outcome.trouble, notes);
        if loss.lost > 0 {
            notes.push(format!(
                "background: {} of {} pulses lost ({} announced as shed)",
                loss.lost, outcome.sent, sub.dropped_notices
            ));
        }
    }

    if let Some(f) = stats.failure {
        anyhow::bail!(
            "the sender failed after {} of {scheduled} pulses: {f}",
            stats.sent
        );
    }
    if m.not_sent > 0 {
        notes.push(format!(
            "the sender was still {} pulses behind schedule {GIVE_UP_AFTER_END:?} after the \
             schedule ended and gave up on them",
            m.not_sent
        ));
    }
    if m.max_sender_lag_us > 1_000.0 {
        notes.push(format!(
            "the sender fell up to {:.0} µs behind its schedule (the bus pushed back or the \
             harness was descheduled); that time is inside the from-intended latencies",
            m.max_sender_lag_us
        ));
    }
    if m.lost > 0 {
        notes.push(format!(
            "{} of {} expected spectral deliveries were lost ({} announced by the server as shed)",
            m.lost, m.expected, m.dropped_notices
        ));
    }
    if m.spectral_mismatches > 0 {
        notes.push(format!(
            "{} spectral pulses arrived without the metadata their agent sent",
            m.spectral_mismatches
        ));
    }
    Ok(m)
}

/// Like [`drain`], over the spectral subscribers and (when there is one) the background one.
async fn drain_mixed(
    spectral: &[Arc<AtomicU64>],
    spectral_expected: u64,
    background: Option<(&Arc<AtomicU64>, u64)>,
    idle_timeout: Duration,
    all_done: impl Fn() -> bool,
) {
    drain(spectral, spectral_expected, idle_timeout, &all_done).await;
    if let Some((counter, expected)) = background {
        drain(
            std::slice::from_ref(counter),
            expected,
            idle_timeout,
            || false,
        )
        .await;
    }
}

async fn connect_agent(target: &Target, reality: &str, name: &str) -> Result<Publisher> {
    Ok(match target.kind {
        Kind::Arqon => {
            let s = arqon::connect(target.addr, None, name).await?;
            Publisher::Arqon(
                s.into_publisher_on(&[(reality.to_string(), SPECTRAL_TOPIC.to_string())], name),
            )
        }
        Kind::Nats => Publisher::Nats(
            nats::Publisher::connect_subjects(target.addr, &[nats_subject(reality)], name).await?,
        ),
    })
}

async fn connect_spectral_sub(target: &Target, reality: &str, name: &str) -> Result<Subscriber> {
    Ok(match target.kind {
        Kind::Arqon => {
            let mut s = arqon::connect(target.addr, None, name).await?;
            s.subscribe(&[reality.to_string()], SPECTRAL_TOPIC).await?;
            Subscriber::Arqon(s.into_subscriber())
        }
        Kind::Nats => Subscriber::Nats(
            nats::Subscriber::connect_subjects(target.addr, &[nats_subject(reality)], name).await?,
        ),
    })
}

fn nats_subject(reality: &str) -> String {
    format!("{reality}.spectral")
}

/// The next spectral pulse's payload and metadata, or what else the connection said.
enum SpectralEvent {
    Pulse(Bytes, Option<SpectralMetadata>),
    Dropped(u64),
    ServerError(String),
    Other,
    Closed,
}

async fn next_spectral(sub: &mut Subscriber) -> Result<SpectralEvent> {
    match sub {
        Subscriber::Arqon(s) => {
            // Decoded whole: the metadata is what is being checked.
            let Some(frame) = s.next_frame().await? else {
                return Ok(SpectralEvent::Closed);
            };
            Ok(match frame.kind {
                Some(server_frame::Kind::Deliver(d)) => {
                    let m = d.message.unwrap_or_default();
                    let payload = m.payload.map(|a| Bytes::from(a.value)).unwrap_or_default();
                    SpectralEvent::Pulse(payload, m.spectral)
                }
                Some(server_frame::Kind::Dropped(d)) => SpectralEvent::Dropped(d.count),
                Some(server_frame::Kind::Error(e)) => {
                    SpectralEvent::ServerError(arqon_error(&e).to_string())
                }
                _ => SpectralEvent::Other,
            })
        }
        Subscriber::Nats(s) => Ok(match s.next().await? {
            crate::driver::Event::Msg(p) => {
                let sp = read_spectral(&p);
                SpectralEvent::Pulse(p, sp)
            }
            crate::driver::Event::Closed => SpectralEvent::Closed,
            _ => SpectralEvent::Other,
        }),
    }
}

fn arqon_error(e: &arqonbus_proto::v1::Error) -> crate::driver::ServerError {
    crate::driver::ServerError::from_proto(e)
}

async fn run_spectral_sub(
    mut sub: Subscriber,
    mut stop: watch::Receiver<bool>,
    accounted: Arc<AtomicU64>,
    eigenvalues: usize,
) -> SpectralSub {
    let mut out = SpectralSub {
        tracker: LossTracker::default(),
        from_intended: Latency::new(),
        from_send: Latency::new(),
        timeline: Timeline::default(),
        dropped_notices: 0,
        spectral_mismatches: 0,
        first_mismatch: None,
        foreign: 0,
        server_errors: 0,
        last_server_error: None,
        failure: None,
        closed_early: false,
        trouble: Trouble::default(),
    };
    let mut distinct = 0u64;
    loop {
        let event = tokio::select! {
            biased;
            _ = stop.changed() => break,
            ev = next_spectral(&mut sub) => ev,
        };
        match event {
            Ok(SpectralEvent::Pulse(payload, spectral)) => {
                let now = now_ns();
                let Some(h) = Header::read(&payload) else {
                    out.foreign += 1;
                    continue;
                };
                if out.tracker.observe(h.publisher, h.reality, h.seq) {
                    distinct += 1;
                    accounted.store(distinct + out.dropped_notices, Ordering::Relaxed);
                }
                let want = spectral_of(h.publisher, h.seq, eigenvalues);
                if spectral.as_ref() != Some(&want) {
                    out.spectral_mismatches += 1;
                    out.first_mismatch.get_or_insert_with(|| {
                        format!(
                            "agent {} pulse {}: sent {want:?}, received {spectral:?}",
                            h.publisher, h.seq
                        )
                    });
                }
                if !h.is_warmup() {
                    let lat = now.saturating_sub(h.intended_ns);
                    out.from_intended.record_ns(lat);
                    out.timeline.record(h.intended_ns, lat);
                    out.from_send.record_ns(now.saturating_sub(h.sent_ns));
                }
            }
            Ok(SpectralEvent::Dropped(n)) => {
                out.dropped_notices += n;
                accounted.store(distinct + out.dropped_notices, Ordering::Relaxed);
            }
            Ok(SpectralEvent::ServerError(e)) => {
                out.server_errors += 1;
                out.last_server_error = Some(e);
            }
            Ok(SpectralEvent::Other) => {}
            Ok(SpectralEvent::Closed) => {
                out.closed_early = !*stop.borrow();
                break;
            }
            Err(e) => {
                out.failure = Some(format!("{e:#}"));
                out.closed_early = true;
                break;
            }
        }
    }
    out.trouble = sub.trouble();
    out
}

fn note_spectral_sub(i: usize, s: &SpectralSub, unexpected: u64, notes: &mut Vec<String>) {
    if let Some(f) = &s.failure {
        notes.push(format!("spectral subscriber {i} failed: {f}"));
    } else if s.closed_early {
        notes.push(format!(
            "spectral subscriber {i}: the server closed the connection before the run ended"
        ));
    }
    if s.server_errors > 0 {
        notes.push(format!(
            "spectral subscriber {i}: {} error frames, last: {}",
            s.server_errors,
            s.last_server_error.as_deref().unwrap_or("?")
        ));
    }
    if s.foreign > 0 {
        notes.push(format!(
            "spectral subscriber {i}: {} payloads without the harness header",
            s.foreign
        ));
    }
    if unexpected > 0 {
        notes.push(format!(
            "spectral subscriber {i}: {unexpected} pulses with sequences never sent"
        ));
    }
    if let Some(first) = &s.first_mismatch {
        notes.push(format!(
            "spectral subscriber {i}: first metadata mismatch: {first}"
        ));
    }
    note_trouble(&format!("spectral subscriber {i}"), &s.trouble, notes);
}

fn send_on_schedule(
    handle: tokio::runtime::Handle,
    mut agents: Vec<Publisher>,
    spec: SpectralSpec,
    scheduled: u64,
    sent_counter: Arc<AtomicU64>,
) -> (SenderStats, Vec<Publisher>) {
    set_thread_timer_slack_ns(1_000);
    let n = agents.len() as u64;
    let start = now_ns() + 5_000_000;
    let warmup_end = start + spec.warmup.as_nanos() as u64;
    let mut schedule = OpenLoop::new(start, spec.rate_per_s(), scheduled);
    let give_up = schedule.intended_ns(scheduled) + GIVE_UP_AFTER_END.as_nanos() as u64;
    let mut out = SenderStats {
        sent: 0,
        warmup_sent: 0,
        per_agent: vec![0; agents.len()],
        max_lag_ns: 0,
        lateness: Latency::new(),
        failure: None,
    };
    let mut touched = BTreeSet::new();
    loop {
        let now = now_ns();
        let Some(wait) = schedule.wait_ns(now) else {
            break;
        };
        if wait > 0 {
            std::thread::sleep(Duration::from_nanos(wait));
            continue;
        }
        if now > give_up {
            break;
        }
        out.max_lag_ns = out.max_lag_ns.max(schedule.lag_ns(now));
        let due = schedule.due(now, MAX_BURST);
        touched.clear();
        let result = handle.block_on(async {
            for j in due.clone() {
                let agent = (j % n) as usize;
                let seq = j / n;
                let intended = schedule.intended_ns(j);
                let sent_ns = now_ns();
                let warm = intended < warmup_end;
                let h = Header {
                    publisher: agent as u32,
                    seq,
                    reality: 0,
                    flags: if warm { FLAG_WARMUP } else { 0 },
                    intended_ns: intended,
                    sent_ns,
                };
                let sp = spectral_of(agent as u32, seq, spec.eigenvalues);
                agents[agent]
                    .send_spectral(0, &h, spec.payload_bytes, &sp)
                    .await?;
                touched.insert(agent);
                out.lateness.record_ns(sent_ns.saturating_sub(intended));
                out.per_agent[agent] = seq + 1;
                out.warmup_sent += u64::from(warm);
                out.sent += 1;
            }
            for &a in &touched {
                agents[a].flush().await?;
            }
            anyhow::Ok(())
        });
        sent_counter.store(out.sent, Ordering::Relaxed);
        if let Err(e) = result {
            out.failure = Some(format!("{e:#}"));
            break;
        }
    }
    (out, agents)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spectral_values_are_a_function_of_agent_and_sequence() {
        let a = spectral_of(3, 17, 4);
        assert_eq!(a, spectral_of(3, 17, 4));
        assert_ne!(a, spectral_of(3, 18, 4));
        assert_ne!(a, spectral_of(4, 17, 4));
        assert!((0.0..1.0).contains(&a.coherence));
        assert!((0.0..1.0).contains(&a.criticality));
        assert_eq!(a.eigenvalues.len(), 4);
        assert!(a.eigenvalues.iter().all(|e| (-2.0..2.0).contains(e)));
    }

    #[test]
    fn agents_send_once_per_interval() {
        let spec = SpectralSpec {
            agents: 100,
            interval: Duration::from_millis(10),
            payload_bytes: 40,
            eigenvalues: 4,
            subscribers: 1,
            duration: Duration::from_secs(1),
            warmup: Duration::ZERO,
            count: None,
            background_rate: None,
            background_payload_bytes: 1024,
            background_own_reality: false,
            drain_timeout: Duration::from_secs(1),
            progress: false,
        };
        assert_eq!(spec.rate_per_s(), 10_000);
        let s = OpenLoop::new(0, spec.rate_per_s(), 1_000);
        // Agent 7's pulses are schedule entries 7, 107, 207 ...: exactly 10 ms apart.
        assert_eq!(s.intended_ns(107) - s.intended_ns(7), 10_000_000);
    }
}
