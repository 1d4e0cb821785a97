//! `latency`: one publisher on an open-loop schedule at a fixed rate (the sender of
//! [`super::open_loop`]), S subscribers measuring each pulse from its intended send time (so a
//! stall is not hidden) and from its actual send.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use futures::future::try_join_all;
use tokio::sync::watch;

use super::flow::{note_subscriber_trouble, note_trouble};
use super::open_loop::{self, SendPlan, SenderOutcome, GIVE_UP_AFTER_END};
use super::{drain, run_subscriber, timed_bar};
use crate::driver::{Names, Publisher, Subscriber};
use crate::payload::now_ns;
use crate::report::LatencyMetrics;
use crate::stats::{Latency, Timeline};
use crate::target::Target;

#[derive(Debug, Clone)]
pub struct LatencySpec {
    pub rate_per_s: u64,
    pub subscribers: usize,
    pub payload_bytes: usize,
    /// Measured part of the run; the warm-up comes before it.
    pub duration: Duration,
    pub warmup: Duration,
    pub drain_timeout: Duration,
    /// Spin (instead of sleeping) for the last this-many microseconds before a send.
    pub spin_us: u64,
    pub progress: bool,
}

pub async fn run(
    target: &Target,
    names: &Names,
    spec: &LatencySpec,
    notes: &mut Vec<String>,
) -> Result<LatencyMetrics> {
    let subs = try_join_all((0..spec.subscribers).map(|i| async move {
        Subscriber::connect(target, names, &format!("bench-lat-sub-{i}")).await
    }))
    .await
    .context("connecting subscribers")?;
    let publisher = Publisher::connect(target, names, "bench-lat-pub")
        .await
        .context("connecting the publisher")?;

    let (stop_tx, stop_rx) = watch::channel(false);
    let received: Vec<Arc<AtomicU64>> = (0..spec.subscribers)
        .map(|_| Arc::new(AtomicU64::new(0)))
        .collect();
    let sub_tasks: Vec<_> = subs
        .into_iter()
        .zip(&received)
        .map(|(s, r)| tokio::spawn(run_subscriber(s, stop_rx.clone(), r.clone(), true)))
        .collect();

    let total_secs = (spec.warmup + spec.duration).as_secs_f64();
    let scheduled = SendPlan::pulses_over(total_secs, spec.rate_per_s);
    let sent_counter = Arc::new(AtomicU64::new(0));
    let pb = timed_bar(spec.progress, spec.warmup + spec.duration, "latency");
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

    // Start a little ahead so the first pulse is not already late.
    let start_ns = now_ns() + 5_000_000;
    let plan = SendPlan {
        start_ns,
        rate_per_s: spec.rate_per_s,
        scheduled,
        warmup_end_ns: start_ns + spec.warmup.as_nanos() as u64,
        payload_bytes: spec.payload_bytes,
        spin_us: spec.spin_us,
        publisher: 0,
        routes: names.realities.len() as u64,
    };
    let sender = open_loop::spawn("open-loop-sender", publisher, plan, sent_counter)?;
    let SenderOutcome {
        stats: outcome,
        publisher,
    } = open_loop::join(sender).await?;

    pb.set_prefix("draining");
    drain(&received, outcome.sent, spec.drain_timeout, || {
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

    let mut m = LatencyMetrics {
        rate_per_s: spec.rate_per_s,
        scheduled,
        sent: outcome.sent,
        not_sent: scheduled - outcome.sent,
        warmup_sent: outcome.warmup_sent,
        max_sender_lag_us: outcome.max_lag_ns as f64 / 1e3,
        send_lateness: outcome.lateness.summary(),
        subscribers: spec.subscribers,
        ..Default::default()
    };
    let span = outcome.last_ns.saturating_sub(outcome.first_ns);
    if span > 0 && outcome.sent > 1 {
        m.achieved_send_rate_per_s = (outcome.sent - 1) as f64 / (span as f64 / 1e9);
    }
    let mut from_intended = Latency::new();
    let mut from_send = Latency::new();
    let mut timeline = Timeline::default();
    for (i, s) in subs_out.iter().enumerate() {
        timeline.merge(&s.timeline);
        let loss = s.tracker.report(&[outcome.sent]);
        m.expected += loss.expected;
        m.received += loss.received;
        m.lost += loss.lost;
        m.duplicates += loss.duplicates;
        m.out_of_order += loss.out_of_order;
        m.dropped_notices += s.dropped_notices;
        if let Some((a, b)) = &s.latency {
            from_intended.merge(a);
            from_send.merge(b);
        }
        note_subscriber_trouble(i, s, loss.unexpected, notes);
    }
    m.from_intended = from_intended.summary();
    m.from_send = from_send.summary();
    m.curve_from_intended = from_intended.curve();
    m.curve_from_send = from_send.curve();
    m.timeline = timeline.windows();
    note_stalls(&m.timeline, notes);
    note_trouble("publisher", &publisher.trouble(), notes);
    if let Some(f) = outcome.failure {
        anyhow::bail!(
            "the sender failed after {} of {scheduled} pulses: {f}",
            outcome.sent
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
            "{} of {} expected deliveries were lost ({} announced by the server as shed)",
            m.lost, m.expected, m.dropped_notices
        ));
    }
    Ok(m)
}

/// Windows whose worst latency is over 10 ms (and 50 times the median window's worst): when
/// and how bad, so a periodic stall can be told from a one-off.
fn note_stalls(timeline: &[crate::stats::Window], notes: &mut Vec<String>) {
    let mut worsts: Vec<f64> = timeline.iter().map(|w| w.max_us).collect();
    let Some(typical) = crate::summary::median(&mut worsts) else {
        return;
    };
    let threshold = (typical * 50.0).max(10_000.0);
    let bad: Vec<&crate::stats::Window> =
        timeline.iter().filter(|w| w.max_us > threshold).collect();
    if bad.is_empty() {
        return;
    }
    let shown: Vec<String> = bad
        .iter()
        .take(12)
        .map(|w| format!("{:.1} s: {:.1} ms", w.t_ms as f64 / 1e3, w.max_us / 1e3))
        .collect();
    notes.push(format!(
        "stalls: {} of {} 100-ms windows had a worst latency above {:.1} ms (the median window's \
         worst is {:.0} µs); at {}{}",
        bad.len(),
        timeline.len(),
        threshold / 1e3,
        typical,
        shown.join(", "),
        if bad.len() > 12 { ", ..." } else { "" }
    ));
}
