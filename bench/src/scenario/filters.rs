//! `filters`: what spectral filters cost the bus, and whether they select exactly.
//!
//! One publisher sends pulses with a random `spectral.coherence` in [0, 1) on an open-loop
//! schedule into one reality. S subscriptions, spread over a few connections, each carry a
//! different threshold filter, `coherence >= g/S` for subscription g. The same run is then
//! repeated with the same subscriptions unfiltered. For each phase: deliveries per second,
//! publish-to-deliver latency from the intended send time, and the server's CPU per published
//! pulse and per delivery. Every subscription's receipts are compared, pulse by pulse, with
//! what its filter admits given the coherences the publisher sent: a pulse delivered that the
//! filter refuses, a duplicate, or one missing that the server did not announce as shed, is a
//! failure of the run.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use arqonbus_proto::v1::SpectralMetadata;
use futures::future::try_join_all;
use tokio::sync::watch;

use super::{drain_each, timed_bar, unit_f64};
use crate::driver::arqon::{self, Incoming, SubscriptionSpec};
use crate::payload::{now_ns, Header, FLAG_WARMUP};
use crate::report::{FilterPhase, FiltersMetrics};
use crate::schedule::OpenLoop;
use crate::stats::Latency;
use crate::sys::{set_thread_timer_slack_ns, CpuSnapshot};
use crate::target::Target;

#[derive(Debug, Clone)]
pub struct FiltersSpec {
    pub rate_per_s: u64,
    pub subscriptions: usize,
    pub connections: usize,
    pub payload_bytes: usize,
    /// Of each phase, warm-up included.
    pub duration: Duration,
    pub warmup: Duration,
    pub drain_timeout: Duration,
    pub server_pid: Option<u32>,
    /// Picks the coherences; the same in both phases.
    pub seed: u64,
    /// Run the unfiltered phase first (to tell an order effect from a filter effect).
    pub unfiltered_first: bool,
    pub progress: bool,
}

/// How long the server's idle CPU is measured before the phases.
const IDLE_PROBE: Duration = Duration::from_secs(1);

/// The threshold of subscription `g` of `s`: g/s, written so that the server parses back the
/// very same double (Rust's shortest round-trip formatting).
pub fn threshold(g: usize, s: usize) -> f64 {
    g as f64 / s as f64
}

pub fn filter_text(t: f64) -> String {
    format!("coherence >= {t}")
}

/// The coherence of pulse `seq`.
pub fn coherence(seed: u64, seq: u64) -> f64 {
    unit_f64(seed ^ seq.wrapping_mul(0x2545_f491_4f6c_dd1d))
}

/// What one subscription received: a bit per sequence, and what did not fit the bitmap.
#[derive(Default, Clone)]
struct SubSeen {
    bits: Vec<u64>,
    duplicates: u64,
    dropped_notices: u64,
}

struct ConnOutcome {
    /// Indexed by subscription id - 1.
    subs: Vec<SubSeen>,
    latency: Latency,
    first_ns: u64,
    last_ns: u64,
    foreign: u64,
    unknown_subscription: u64,
    failure: Option<String>,
    server_error: Option<String>,
}

pub async fn run(
    target: &Target,
    reality: &str,
    spec: &FiltersSpec,
    notes: &mut Vec<String>,
) -> Result<FiltersMetrics> {
    let mut m = FiltersMetrics {
        rate_per_s: spec.rate_per_s,
        subscriptions: spec.subscriptions,
        connections: spec.connections,
        ..Default::default()
    };
    if spec.server_pid.is_none() {
        notes.push("no --server-pid: the server's CPU per pulse is not measured".into());
    }
    // What the server burns doing nothing (timers, polling), so the per-pulse figures can be
    // read net of it.
    let idle_before = CpuSnapshot::take(spec.server_pid);
    tokio::time::sleep(IDLE_PROBE).await;
    m.server_idle_cores = idle_before
        .zip(CpuSnapshot::take(spec.server_pid))
        .and_then(|(a, b)| a.until(&b).server);
    let mut order = [("filtered", true), ("unfiltered", false)];
    if spec.unfiltered_first {
        order.reverse();
    }
    for (name, filtered) in order {
        let phase = run_phase(target, reality, spec, filtered, m.server_idle_cores, notes)
            .await
            .with_context(|| format!("the {name} phase"))?;
        m.phases.push(phase);
    }
    m.phases.sort_by_key(|p| p.name != "filtered");
    if let (Some(f), Some(u)) = (
        m.phases[0].server_net_cpu_us_per_pulse,
        m.phases[1].server_net_cpu_us_per_pulse,
    ) {
        if u > 0.0 {
            m.filtered_cpu_per_pulse_ratio = Some(f / u);
        }
    }
    Ok(m)
}

async fn run_phase(
    target: &Target,
    reality: &str,
    spec: &FiltersSpec,
    filtered: bool,
    idle_cores: Option<f64>,
    notes: &mut Vec<String>,
) -> Result<FilterPhase> {
    let name = if filtered { "filtered" } else { "unfiltered" };
    let s = spec.subscriptions;
    let c = spec.connections;
    // Subscription g lives on connection g % c, with id g / c + 1 there.
    let layout: Vec<Vec<usize>> = (0..c).map(|k| (k..s).step_by(c).collect()).collect();
    let conns = try_join_all(layout.iter().enumerate().map(|(k, globals)| async move {
        let mut session =
            arqon::connect(target.addr, None, &format!("bench-filt-{name}-{k}")).await?;
        let subs: Vec<SubscriptionSpec> = globals
            .iter()
            .enumerate()
            .map(|(i, &g)| SubscriptionSpec {
                id: i as u64 + 1,
                reality: reality.to_string(),
                pattern: arqon::TOPIC.to_string(),
                filter: if filtered {
                    filter_text(threshold(g, s))
                } else {
                    String::new()
                },
            })
            .collect();
        session.subscribe_all(&subs).await?;
        anyhow::Ok(session.into_subscriber())
    }))
    .await
    .context("connecting and subscribing")?;
    let publisher = arqon::connect(target.addr, None, &format!("bench-filt-pub-{name}"))
        .await
        .context("connecting the publisher")?
        .into_publisher_on(
            &[(reality.to_string(), arqon::TOPIC.to_string())],
            "bench-filt-pub",
        );

    let (stop_tx, stop_rx) = watch::channel(false);
    let accounted: Vec<Arc<AtomicU64>> = (0..c).map(|_| Arc::new(AtomicU64::new(0))).collect();
    let tasks: Vec<_> = conns
        .into_iter()
        .zip(&layout)
        .zip(&accounted)
        .map(|((sub, globals), acc)| {
            tokio::spawn(receive(sub, globals.len(), stop_rx.clone(), acc.clone()))
        })
        .collect();

    let scheduled = ((spec.duration.as_secs_f64() * spec.rate_per_s as f64).round() as u64).max(1);
    let pb = timed_bar(spec.progress, spec.duration, name);
    let cpu_before = CpuSnapshot::take(spec.server_pid);
    let handle = tokio::runtime::Handle::current();
    let sender_spec = spec.clone();
    let sender = std::thread::Builder::new()
        .name("filters-sender".into())
        .spawn(move || send_on_schedule(handle, publisher, &sender_spec, scheduled))
        .context("starting the sender thread")?;
    let (sent, send_secs, failure, publisher) = tokio::task::spawn_blocking(move || sender.join())
        .await
        .context("joining the sender")?
        .map_err(|_| anyhow!("the sender thread panicked"))?;
    if let Some(f) = failure {
        bail!("the publisher failed after {sent} of {scheduled} pulses: {f}");
    }
    let coherences: Vec<f64> = (0..sent).map(|i| coherence(spec.seed, i)).collect();
    let admits = |g: usize, seq: usize| !filtered || coherences[seq] >= threshold(g, s);
    let expected_per_conn: Vec<u64> = layout
        .iter()
        .map(|globals| {
            globals
                .iter()
                .map(|&g| (0..sent as usize).filter(|&q| admits(g, q)).count() as u64)
                .sum()
        })
        .collect();
    pb.set_prefix("draining");
    drain_each(&accounted, &expected_per_conn, spec.drain_timeout, || {
        tasks.iter().all(|t| t.is_finished())
    })
    .await;
    // (average cores, seconds they are averaged over)
    let cpu = cpu_before
        .zip(CpuSnapshot::take(spec.server_pid))
        .map(|(a, b)| (a.until(&b), a.secs_until(&b)));
    let _ = stop_tx.send(true);
    pb.finish_and_clear();
    drop(publisher);
    let mut outs = Vec::new();
    for t in tasks {
        outs.push(t.await.context("receiver task panicked")?);
    }

    let mut p = FilterPhase {
        name: name.to_string(),
        example_filter: if filtered {
            filter_text(threshold(s / 2, s))
        } else {
            String::new()
        },
        published: sent,
        publish_secs: send_secs,
        expected_deliveries: expected_per_conn.iter().sum(),
        ..Default::default()
    };
    let mut latency = Latency::new();
    let (mut first, mut last) = (u64::MAX, 0u64);
    let mut first_wrong: Option<String> = None;
    for (k, (out, globals)) in outs.iter().zip(&layout).enumerate() {
        latency.merge(&out.latency);
        if out.first_ns > 0 {
            first = first.min(out.first_ns);
        }
        last = last.max(out.last_ns);
        if let Some(f) = &out.failure {
            notes.push(format!("{name}: connection {k} failed: {f}"));
        }
        if let Some(e) = &out.server_error {
            notes.push(format!("{name}: connection {k}: server error: {e}"));
        }
        if out.foreign + out.unknown_subscription > 0 {
            notes.push(format!(
                "{name}: connection {k}: {} payloads without the harness header, {} deliveries \
                 for subscriptions it never made",
                out.foreign, out.unknown_subscription
            ));
            p.extra += out.foreign + out.unknown_subscription;
        }
        for (i, &g) in globals.iter().enumerate() {
            let seen = &out.subs[i];
            let Selection {
                received: got,
                missing,
                extra,
            } = compare(&seen.bits, sent, |q| admits(g, q));
            p.deliveries += got;
            p.missing += missing;
            p.extra += extra;
            p.duplicates += seen.duplicates;
            p.dropped_notices += seen.dropped_notices;
            let unexplained = missing.saturating_sub(seen.dropped_notices);
            p.unexplained_missing += unexplained;
            if extra + seen.duplicates + unexplained > 0 {
                p.subscriptions_wrong += 1;
                first_wrong.get_or_insert_with(|| {
                    format!(
                        "subscription {g} (`{}`): {missing} missing ({} announced as shed), \
                         {extra} delivered that its filter refuses, {} duplicates",
                        if filtered {
                            filter_text(threshold(g, s))
                        } else {
                            "no filter".into()
                        },
                        seen.dropped_notices,
                        seen.duplicates
                    )
                });
            }
        }
    }
    if let Some(w) = first_wrong {
        notes.push(format!(
            "{name}: {} of {s} subscriptions did not get exactly what their filter admits; first: {w}",
            p.subscriptions_wrong
        ));
    }
    if p.dropped_notices > 0 {
        notes.push(format!(
            "{name}: the server announced {} deliveries as shed (slow consumer)",
            p.dropped_notices
        ));
    }
    if last > first {
        p.delivery_secs = (last - first) as f64 / 1e9;
        p.deliveries_per_s = p.deliveries as f64 / p.delivery_secs;
    }
    p.latency = latency.summary();
    p.curve = latency.curve();
    if let Some((cpu, window_s)) = cpu {
        p.harness_cores = Some(cpu.harness);
        if let Some(server) = cpu.server {
            p.server_cores = Some(server);
            // Average cores times the window (from before the first publish to the end of the
            // drain) is the server's CPU time for the phase.
            let server_us = server * window_s * 1e6;
            if sent > 0 {
                p.server_cpu_us_per_pulse = Some(server_us / sent as f64);
            }
            if p.deliveries > 0 {
                p.server_cpu_us_per_delivery = Some(server_us / p.deliveries as f64);
            }
            if let (Some(idle), true) = (idle_cores, sent > 0) {
                let net_us = (server - idle).max(0.0) * window_s * 1e6;
                p.server_net_cpu_us_per_pulse = Some(net_us / sent as f64);
            }
        }
    }
    Ok(p)
}

/// How one subscription's receipts (a bit per sequence) compare with what its filter admits
/// among the `sent` pulses.
#[derive(Debug, PartialEq, Eq)]
struct Selection {
    /// Distinct pulses received below `sent`, admitted or not.
    received: u64,
    /// Admitted, not received.
    missing: u64,
    /// Received, not admitted — or never published (bits at or beyond `sent`).
    extra: u64,
}

fn compare(bits: &[u64], sent: u64, admits: impl Fn(usize) -> bool) -> Selection {
    let mut sel = Selection {
        received: 0,
        missing: 0,
        extra: 0,
    };
    for q in 0..sent as usize {
        let has = bits.get(q / 64).is_some_and(|w| w & (1 << (q % 64)) != 0);
        sel.received += u64::from(has);
        match (admits(q), has) {
            (true, false) => sel.missing += 1,
            (false, true) => sel.extra += 1,
            _ => {}
        }
    }
    let total: u64 = bits.iter().map(|w| u64::from(w.count_ones())).sum();
    sel.extra += total - sel.received;
    sel
}

async fn receive(
    mut sub: arqon::Subscriber,
    n_subs: usize,
    mut stop: watch::Receiver<bool>,
    accounted: Arc<AtomicU64>,
) -> ConnOutcome {
    let mut out = ConnOutcome {
        subs: vec![SubSeen::default(); n_subs],
        latency: Latency::new(),
        first_ns: 0,
        last_ns: 0,
        foreign: 0,
        unknown_subscription: 0,
        failure: None,
        server_error: None,
    };
    let mut count = 0u64;
    loop {
        let ev = tokio::select! {
            biased;
            _ = stop.changed() => break,
            ev = sub.next_incoming() => ev,
        };
        match ev {
            Ok(Incoming::Deliver {
                subscription_id,
                payload,
            }) => {
                let now = now_ns();
                let Some(h) = Header::read(&payload) else {
                    out.foreign += 1;
                    continue;
                };
                let Some(seen) = (subscription_id as usize)
                    .checked_sub(1)
                    .and_then(|i| out.subs.get_mut(i))
                else {
                    out.unknown_subscription += 1;
                    continue;
                };
                let (w, b) = ((h.seq / 64) as usize, h.seq % 64);
                if seen.bits.len() <= w {
                    seen.bits.resize(w + 1, 0);
                }
                if seen.bits[w] & (1 << b) != 0 {
                    seen.duplicates += 1;
                    continue;
                }
                seen.bits[w] |= 1 << b;
                count += 1;
                accounted.store(count, Ordering::Relaxed);
                if out.first_ns == 0 {
                    out.first_ns = now;
                }
                out.last_ns = now;
                if !h.is_warmup() {
                    out.latency.record_ns(now.saturating_sub(h.intended_ns));
                }
            }
            Ok(Incoming::Dropped {
                subscription_id,
                count: n,
            }) => {
                if let Some(seen) = (subscription_id as usize)
                    .checked_sub(1)
                    .and_then(|i| out.subs.get_mut(i))
                {
                    seen.dropped_notices += n;
                }
                count += n;
                accounted.store(count, Ordering::Relaxed);
            }
            Ok(Incoming::ServerError(e)) => out.server_error = Some(e.to_string()),
            Ok(Incoming::Other) => {}
            Ok(Incoming::Closed) => {
                if !*stop.borrow() {
                    out.failure = Some("the server closed the connection".into());
                }
                break;
            }
            Err(e) => {
                out.failure = Some(format!("{e:#}"));
                break;
            }
        }
    }
    out
}

/// Sends `scheduled` pulses at the spec's rate, pulse `i` with coherence [`coherence`]`(seed,
/// i)`. Returns pulses sent, seconds from first to last, a failure, and the publisher.
fn send_on_schedule(
    handle: tokio::runtime::Handle,
    mut publisher: arqon::Publisher,
    spec: &FiltersSpec,
    scheduled: u64,
) -> (u64, f64, Option<String>, arqon::Publisher) {
    set_thread_timer_slack_ns(1_000);
    let start = now_ns() + 5_000_000;
    let warmup_end = start + spec.warmup.as_nanos() as u64;
    let mut schedule = OpenLoop::new(start, spec.rate_per_s, scheduled);
    let give_up = schedule.intended_ns(scheduled) + 10_000_000_000;
    let (mut sent, mut first, mut last) = (0u64, 0u64, 0u64);
    let mut failure = None;
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
            failure = Some("still behind schedule 10 s after its end".to_string());
            break;
        }
        let due = schedule.due(now, 256);
        let result = handle.block_on(async {
            for i in due.clone() {
                let intended = schedule.intended_ns(i);
                let t = now_ns();
                let h = Header {
                    publisher: 0,
                    seq: i,
                    reality: 0,
                    flags: if intended < warmup_end {
                        FLAG_WARMUP
                    } else {
                        0
                    },
                    intended_ns: intended,
                    sent_ns: t,
                };
                let c = coherence(spec.seed, i);
                publisher
                    .send_with(0, false, |m| {
                        if let Some(any) = m.payload.as_mut() {
                            h.write(&mut any.value, spec.payload_bytes);
                        }
                        m.spectral = Some(SpectralMetadata {
                            coherence: c,
                            criticality: 0.0,
                            eigenvalues: Vec::new(),
                        });
                    })
                    .await?;
                if first == 0 {
                    first = t;
                }
                last = t;
                sent += 1;
            }
            publisher.flush().await
        });
        if let Err(e) = result {
            failure = Some(format!("{e:#}"));
            break;
        }
    }
    (
        sent,
        last.saturating_sub(first) as f64 / 1e9,
        failure,
        publisher,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_print_as_the_same_double() {
        for s in [7usize, 100, 1_000, 999] {
            for g in 0..s {
                let t = threshold(g, s);
                let text = filter_text(t);
                let number = &text["coherence >= ".len()..];
                let back: f64 = number.parse().unwrap();
                assert_eq!(back.to_bits(), t.to_bits(), "{text}");
                assert!(!number.contains('e'), "no exponent: {text}");
            }
        }
    }

    #[test]
    fn selection_finds_missing_refused_and_unpublished_pulses() {
        // Pulses 0..10 sent; the filter admits the even ones. Received: 0, 2, 3 (refused), 6,
        // 8, and 70 (never published); 4 is missing.
        let mut bits = vec![0u64; 2];
        for q in [0usize, 2, 3, 6, 8, 70] {
            bits[q / 64] |= 1 << (q % 64);
        }
        let sel = compare(&bits, 10, |q| q % 2 == 0);
        assert_eq!(
            sel,
            Selection {
                received: 5,
                missing: 1,
                extra: 2
            }
        );
        let exact = compare(&[0b1_0101_0101], 10, |q| q % 2 == 0);
        assert_eq!((exact.missing, exact.extra), (0, 0));
    }

    #[test]
    fn coherences_spread_over_the_unit_interval() {
        let n = 10_000;
        let cs: Vec<f64> = (0..n).map(|i| coherence(42, i)).collect();
        assert!(cs.iter().all(|c| (0.0..1.0).contains(c)));
        let below_half = cs.iter().filter(|&&c| c < 0.5).count();
        assert!((4_500..5_500).contains(&below_half), "{below_half}");
        assert_ne!(coherence(42, 1), coherence(43, 1));
    }
}
