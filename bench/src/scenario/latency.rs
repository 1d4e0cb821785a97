//! `latency`: one publisher on an open-loop schedule at a fixed rate, S subscribers measuring
//! each pulse from its intended send time (so a stall is not hidden) and from its actual send.
//!
//! The sender runs on its own OS thread with a 1 µs timer slack: tokio's timer wheel has a 1 ms
//! resolution, far too coarse for a schedule of one pulse every 20 µs. It drives the async
//! publisher through the runtime's handle, one burst (the pulses due now) at a time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use futures::future::try_join_all;
use tokio::sync::watch;

use super::flow::{note_subscriber_trouble, note_trouble};
use super::{drain, run_subscriber, timed_bar};
use crate::driver::{Names, Publisher, Subscriber};
use crate::payload::{now_ns, Header, FLAG_WARMUP};
use crate::report::LatencyMetrics;
use crate::schedule::OpenLoop;
use crate::stats::{Latency, Timeline};
use crate::sys::set_thread_timer_slack_ns;
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

/// The most pulses sent in one burst before looking at the clock again.
const MAX_BURST: u64 = 256;
/// A sender still behind schedule this long after the schedule's end stops (the rest are
/// reported as not sent) so that a wedged bus cannot keep the run going forever.
const GIVE_UP_AFTER_END: Duration = Duration::from_secs(10);

struct SenderStats {
    sent: u64,
    warmup_sent: u64,
    max_lag_ns: u64,
    lateness: Latency,
    first_ns: u64,
    last_ns: u64,
    failure: Option<String>,
}

struct SenderOutcome {
    stats: SenderStats,
    publisher: Publisher,
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
    let scheduled = (total_secs * spec.rate_per_s as f64).round().max(1.0) as u64;
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

    let handle = tokio::runtime::Handle::current();
    let sender_spec = spec.clone();
    let realities = names.realities.len() as u64;
    let sender = std::thread::Builder::new()
        .name("open-loop-sender".into())
        .spawn(move || {
            send_on_schedule(
                handle,
                publisher,
                sender_spec,
                scheduled,
                realities,
                sent_counter,
            )
        })
        .context("starting the sender thread")?;
    let SenderOutcome {
        stats: outcome,
        publisher,
    } = tokio::task::spawn_blocking(move || sender.join())
        .await
        .context("joining the sender")?
        .map_err(|_| anyhow!("the sender thread panicked"))?;

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

fn send_on_schedule(
    handle: tokio::runtime::Handle,
    mut publisher: Publisher,
    spec: LatencySpec,
    scheduled: u64,
    realities: u64,
    sent_counter: Arc<AtomicU64>,
) -> SenderOutcome {
    set_thread_timer_slack_ns(1_000);
    // Start a little ahead so the first pulse is not already late.
    let start = now_ns() + 5_000_000;
    let warmup_end = start + spec.warmup.as_nanos() as u64;
    let mut schedule = OpenLoop::new(start, spec.rate_per_s, scheduled);
    let give_up = schedule.intended_ns(scheduled) + GIVE_UP_AFTER_END.as_nanos() as u64;
    let spin_ns = spec.spin_us * 1_000;
    let mut out = SenderStats {
        sent: 0,
        warmup_sent: 0,
        max_lag_ns: 0,
        lateness: Latency::new(),
        first_ns: 0,
        last_ns: 0,
        failure: None,
    };
    loop {
        let now = now_ns();
        let Some(wait) = schedule.wait_ns(now) else {
            break;
        };
        if wait > 0 {
            precise_sleep(wait, spin_ns);
            continue;
        }
        if now > give_up {
            break;
        }
        out.max_lag_ns = out.max_lag_ns.max(schedule.lag_ns(now));
        let due = schedule.due(now, MAX_BURST);
        let result = handle.block_on(async {
            for i in due.clone() {
                let intended = schedule.intended_ns(i);
                let sent_ns = now_ns();
                let warm = intended < warmup_end;
                let h = Header {
                    publisher: 0,
                    seq: i,
                    reality: (i % realities) as u32,
                    flags: if warm { FLAG_WARMUP } else { 0 },
                    intended_ns: intended,
                    sent_ns,
                };
                publisher
                    .send(h.reality as usize, &h, spec.payload_bytes)
                    .await?;
                out.lateness.record_ns(sent_ns.saturating_sub(intended));
                if out.first_ns == 0 {
                    out.first_ns = sent_ns;
                }
                out.last_ns = sent_ns;
                out.warmup_sent += u64::from(warm);
                out.sent += 1;
            }
            publisher.flush().await
        });
        sent_counter.store(out.sent, Ordering::Relaxed);
        if let Err(e) = result {
            out.failure = Some(format!("{e:#}"));
            break;
        }
    }
    SenderOutcome {
        stats: out,
        publisher,
    }
}

/// Sleeps `ns`, spinning for the last `spin_ns` of it.
fn precise_sleep(ns: u64, spin_ns: u64) {
    if ns > spin_ns {
        std::thread::sleep(Duration::from_nanos(ns - spin_ns));
    } else {
        std::hint::spin_loop();
    }
}
