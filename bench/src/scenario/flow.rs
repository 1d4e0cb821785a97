//! `throughput` (P publishers, S subscribers) and `fanout` (1 publisher, S subscribers): every
//! subscriber subscribes to every reality, so each expects every pulse of every publisher.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use futures::future::try_join_all;
use tokio::sync::{watch, Barrier};

use super::{drain, rates, run_subscriber, timed_bar, SubOutcome};
use crate::driver::{Names, Publisher, Subscriber, Trouble};
use crate::payload::{now_ns, Header};
use crate::report::{FlowMetrics, SubscriberFlow};
use crate::schedule::OpenLoop;
use crate::target::Target;

#[derive(Debug, Clone)]
pub struct FlowSpec {
    pub publishers: usize,
    pub subscribers: usize,
    /// Per publisher; zero means as fast as the bus takes them.
    pub rate_per_publisher: u64,
    pub payload_bytes: usize,
    pub duration: Duration,
    /// Per publisher; when set the run ends after this many (or at `duration`, if sooner).
    pub count_per_publisher: Option<u64>,
    pub drain_timeout: Duration,
    pub progress: bool,
}

pub(super) struct PubOutcome {
    pub(super) sent: u64,
    pub(super) first_ns: u64,
    pub(super) end_ns: u64,
    pub(super) trouble: Trouble,
}

/// How many pulses a flat-out publisher sends between looks at the clock.
const CHECK_EVERY: u64 = 128;

pub async fn run(
    target: &Target,
    names: &Names,
    spec: &FlowSpec,
    notes: &mut Vec<String>,
) -> Result<FlowMetrics> {
    let subs = try_join_all((0..spec.subscribers).map(|i| async move {
        Subscriber::connect(target, names, &format!("bench-sub-{i}")).await
    }))
    .await
    .context("connecting subscribers")?;
    let pubs = try_join_all((0..spec.publishers).map(|i| async move {
        Publisher::connect(target, names, &format!("bench-pub-{i}")).await
    }))
    .await
    .context("connecting publishers")?;

    let (stop_tx, stop_rx) = watch::channel(false);
    let received: Vec<Arc<AtomicU64>> = (0..spec.subscribers)
        .map(|_| Arc::new(AtomicU64::new(0)))
        .collect();
    let sub_tasks: Vec<_> = subs
        .into_iter()
        .zip(&received)
        .map(|(s, r)| tokio::spawn(run_subscriber(s, stop_rx.clone(), r.clone(), false)))
        .collect();

    let sent: Vec<Arc<AtomicU64>> = (0..spec.publishers)
        .map(|_| Arc::new(AtomicU64::new(0)))
        .collect();
    let barrier = Arc::new(Barrier::new(spec.publishers));
    let pub_tasks: Vec<_> = pubs
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            tokio::spawn(publish(
                p,
                i as u32,
                names.realities.len(),
                spec.clone(),
                sent[i].clone(),
                barrier.clone(),
            ))
        })
        .collect();

    let pb = timed_bar(spec.progress, spec.duration, "publishing");
    let ticker = {
        let (pb, sent, received) = (pb.clone(), sent.clone(), received.clone());
        let start = tokio::time::Instant::now();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                pb.set_position(start.elapsed().as_millis() as u64);
                let s: u64 = sent.iter().map(|c| c.load(Ordering::Relaxed)).sum();
                let r: u64 = received.iter().map(|c| c.load(Ordering::Relaxed)).sum();
                pb.set_message(format!("sent {s}, accounted for {r}"));
            }
        })
    };

    let mut outcomes = Vec::new();
    for t in pub_tasks {
        outcomes.push(t.await.context("publisher task panicked")??);
    }
    let sent_per_pub: Vec<u64> = outcomes.iter().map(|o| o.sent).collect();
    let expected: u64 = sent_per_pub.iter().sum();
    pb.set_prefix("draining");
    drain(&received, expected, spec.drain_timeout, || {
        sub_tasks.iter().all(|t| t.is_finished())
    })
    .await;
    let _ = stop_tx.send(true);
    ticker.abort();
    pb.finish_and_clear();
    let mut subs_out = Vec::new();
    for t in sub_tasks {
        subs_out.push(t.await.context("subscriber task panicked")?);
    }
    let payload = spec.payload_bytes.max(crate::payload::HEADER_BYTES) as u64;
    Ok(summarise(
        &outcomes,
        &subs_out,
        &sent_per_pub,
        payload,
        notes,
    ))
}

/// One publisher's loop: flat out or on an open-loop schedule, until the duration or count.
pub(super) async fn publish(
    mut p: Publisher,
    id: u32,
    realities: usize,
    spec: FlowSpec,
    sent: Arc<AtomicU64>,
    barrier: Arc<Barrier>,
) -> Result<PubOutcome> {
    barrier.wait().await;
    let start = now_ns();
    let deadline = start + spec.duration.as_nanos() as u64;
    let limit = spec.count_per_publisher.unwrap_or(u64::MAX);
    let mut schedule = (spec.rate_per_publisher > 0).then(|| {
        let total = spec.count_per_publisher.unwrap_or_else(|| {
            (spec.duration.as_secs_f64() * spec.rate_per_publisher as f64).ceil() as u64 + 1
        });
        OpenLoop::new(start, spec.rate_per_publisher, total)
    });
    let mut seq = 0u64;
    loop {
        let now = now_ns();
        if now >= deadline || seq >= limit {
            break;
        }
        let batch = match schedule.as_mut() {
            None => CHECK_EVERY.min(limit - seq),
            Some(s) => {
                let due = s.due(now, 1024);
                if due.is_empty() {
                    let Some(wait) = s.wait_ns(now) else { break };
                    p.flush().await?;
                    tokio::time::sleep(Duration::from_nanos(wait)).await;
                    continue;
                }
                due.end - due.start
            }
        };
        for _ in 0..batch {
            let t = now_ns();
            let h = Header {
                publisher: id,
                seq,
                reality: (seq % realities as u64) as u32,
                flags: 0,
                intended_ns: t,
                sent_ns: t,
            };
            p.send(h.reality as usize, &h, spec.payload_bytes).await?;
            seq += 1;
        }
        sent.store(seq, Ordering::Relaxed);
    }
    p.flush().await?;
    let end_ns = now_ns();
    Ok(PubOutcome {
        sent: seq,
        first_ns: start,
        end_ns,
        trouble: p.trouble(),
    })
}

fn summarise(
    pubs: &[PubOutcome],
    subs: &[SubOutcome],
    sent: &[u64],
    payload_bytes: u64,
    notes: &mut Vec<String>,
) -> FlowMetrics {
    let mut m = FlowMetrics {
        published: sent.iter().sum(),
        ..Default::default()
    };
    let first = pubs.iter().map(|p| p.first_ns).min().unwrap_or(0);
    let end = pubs.iter().map(|p| p.end_ns).max().unwrap_or(0);
    m.publish_secs = end.saturating_sub(first) as f64 / 1e9;
    (m.publish_msgs_per_s, m.publish_mb_per_s) = rates(
        m.published,
        m.published * payload_bytes,
        end.saturating_sub(first),
    );

    let mut sub_rates = Vec::new();
    for (i, s) in subs.iter().enumerate() {
        let loss = s.tracker.report(sent);
        let window = s.last_ns.saturating_sub(s.first_ns);
        let (msgs_per_s, mb_per_s) = rates(loss.received, s.bytes, window);
        sub_rates.push(msgs_per_s);
        m.deliveries += loss.received;
        m.lost += loss.lost;
        m.duplicates += loss.duplicates;
        m.out_of_order += loss.out_of_order;
        m.dropped_notices += s.dropped_notices;
        m.subscribers.push(SubscriberFlow {
            index: i,
            expected: loss.expected,
            received: loss.received,
            lost: loss.lost,
            duplicates: loss.duplicates,
            out_of_order: loss.out_of_order,
            dropped_notices: s.dropped_notices,
            msgs_per_s,
            mb_per_s,
        });
        note_subscriber_trouble(i, s, loss.unexpected, notes);
    }
    let first_rx = subs
        .iter()
        .filter(|s| s.first_ns > 0)
        .map(|s| s.first_ns)
        .min()
        .unwrap_or(0);
    let last_rx = subs.iter().map(|s| s.last_ns).max().unwrap_or(0);
    m.delivery_secs = last_rx.saturating_sub(first_rx) as f64 / 1e9;
    let bytes: u64 = subs.iter().map(|s| s.bytes).sum();
    (m.deliveries_per_s, m.delivery_mb_per_s) =
        rates(m.deliveries, bytes, last_rx.saturating_sub(first_rx));
    m.min_subscriber_msgs_per_s = sub_rates.iter().cloned().fold(f64::INFINITY, f64::min);
    if !m.min_subscriber_msgs_per_s.is_finite() {
        m.min_subscriber_msgs_per_s = 0.0;
    }
    m.mean_subscriber_msgs_per_s = if sub_rates.is_empty() {
        0.0
    } else {
        sub_rates.iter().sum::<f64>() / sub_rates.len() as f64
    };
    for (i, p) in pubs.iter().enumerate() {
        note_trouble(&format!("publisher {i}"), &p.trouble, notes);
    }
    if m.lost > 0 {
        notes.push(format!(
            "{} of {} expected deliveries were lost ({} announced by the server as shed)",
            m.lost,
            m.published * subs.len() as u64,
            m.dropped_notices
        ));
    }
    m
}

pub fn note_subscriber_trouble(i: usize, s: &SubOutcome, unexpected: u64, notes: &mut Vec<String>) {
    note_named_subscriber_trouble(&format!("subscriber {i}"), s, unexpected, notes);
}

pub fn note_named_subscriber_trouble(
    who: &str,
    s: &SubOutcome,
    unexpected: u64,
    notes: &mut Vec<String>,
) {
    if let Some(f) = &s.failure {
        notes.push(format!("{who} failed: {f}"));
    } else if s.closed_early {
        notes.push(format!(
            "{who}: the server closed the connection before the run ended"
        ));
    }
    if s.server_errors > 0 {
        notes.push(format!(
            "{who}: {} error frames, last: {}",
            s.server_errors,
            s.last_server_error.as_deref().unwrap_or("?")
        ));
    }
    if s.foreign > 0 {
        notes.push(format!(
            "{who}: {} payloads without the harness header",
            s.foreign
        ));
    }
    if unexpected > 0 {
        notes.push(format!(
            "{who}: {unexpected} pulses with sequences never sent"
        ));
    }
    note_trouble(who, &s.trouble, notes);
}

pub fn note_trouble(who: &str, t: &Trouble, notes: &mut Vec<String>) {
    if t.client_drops > 0 {
        notes.push(format!(
            "{who}: the client library reported {} slow-consumer events (it dropped messages it \
             could not buffer)",
            t.client_drops
        ));
    }
    if t.server_errors > 0 {
        notes.push(format!(
            "{who}: {} server errors, last: {}",
            t.server_errors,
            t.last_error.as_deref().unwrap_or("?")
        ));
    }
    if t.disconnects > 0 {
        notes.push(format!("{who}: connection lost {} times", t.disconnects));
    }
}
