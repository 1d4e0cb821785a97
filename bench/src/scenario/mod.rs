//! The load scenarios and what they share: subscriber tasks that account every pulse, and the
//! drain that waits for the last pulses after the publishers stop.

pub mod conns;
pub mod delta;
pub mod durable;
pub mod filters;
pub mod flow;
pub mod latency;
pub mod open_loop;
pub mod params;
pub mod spectral;
pub mod tenants;
pub mod types;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::watch;

use crate::driver::{Event, Subscriber, Trouble};
use crate::payload::{now_ns, Header};
use crate::stats::{Latency, LossTracker, PhaseWindows, PhasedLatency, Timeline};

/// What one subscriber saw over a run.
pub struct SubOutcome {
    pub tracker: LossTracker,
    pub first_ns: u64,
    pub last_ns: u64,
    pub bytes: u64,
    /// Pulses the server said it shed for this subscriber (ArqonBus `Dropped`).
    pub dropped_notices: u64,
    pub server_errors: u64,
    pub last_server_error: Option<String>,
    /// Payloads that did not carry the harness's header.
    pub foreign: u64,
    /// The connection ended before the run did.
    pub closed_early: bool,
    pub failure: Option<String>,
    /// Latency from the intended and from the actual send time (latency runs only).
    pub latency: Option<(Latency, Latency)>,
    /// Worst latency from the intended send per 100 ms window (latency runs only).
    pub timeline: Timeline,
    /// Latency from the intended send, one histogram per phase ([`run_phased_subscriber`]).
    pub phased: Option<PhasedLatency>,
    pub trouble: Trouble,
}

/// Receives until told to stop (or the connection ends), accounting every pulse. Publishes the
/// running count of pulses accounted for (distinct pulses received plus those the server said
/// it shed) in `accounted`, for progress and the drain.
pub async fn run_subscriber(
    sub: Subscriber,
    stop: watch::Receiver<bool>,
    accounted: Arc<AtomicU64>,
    record_latency: bool,
) -> SubOutcome {
    receive(sub, stop, accounted, record_latency, None).await
}

/// [`run_subscriber`] recording latency from the intended send both over the whole run and per
/// phase of `windows` (by the intended send time).
pub async fn run_phased_subscriber(
    sub: Subscriber,
    stop: watch::Receiver<bool>,
    accounted: Arc<AtomicU64>,
    windows: PhaseWindows,
) -> SubOutcome {
    receive(sub, stop, accounted, true, Some(windows)).await
}

async fn receive(
    mut sub: Subscriber,
    mut stop: watch::Receiver<bool>,
    accounted: Arc<AtomicU64>,
    record_latency: bool,
    phases: Option<PhaseWindows>,
) -> SubOutcome {
    let mut out = SubOutcome {
        tracker: LossTracker::default(),
        first_ns: 0,
        last_ns: 0,
        bytes: 0,
        dropped_notices: 0,
        server_errors: 0,
        last_server_error: None,
        foreign: 0,
        closed_early: false,
        failure: None,
        latency: record_latency.then(|| (Latency::new(), Latency::new())),
        timeline: Timeline::default(),
        phased: phases.map(PhasedLatency::new),
        trouble: Trouble::default(),
    };
    let mut distinct = 0u64;
    loop {
        let event = tokio::select! {
            biased;
            _ = stop.changed() => break,
            ev = sub.next() => ev,
        };
        match event {
            Ok(Event::Msg(payload)) => {
                let now = now_ns();
                let Some(h) = Header::read(&payload) else {
                    out.foreign += 1;
                    continue;
                };
                if out.tracker.observe(h.publisher, h.reality, h.seq) {
                    distinct += 1;
                    accounted.store(distinct + out.dropped_notices, Ordering::Relaxed);
                }
                if out.first_ns == 0 {
                    out.first_ns = now;
                }
                out.last_ns = now;
                out.bytes += payload.len() as u64;
                if let Some((intended, sent)) = out.latency.as_mut() {
                    if !h.is_warmup() {
                        intended.record_ns(now.saturating_sub(h.intended_ns));
                        out.timeline
                            .record(h.intended_ns, now.saturating_sub(h.intended_ns));
                        sent.record_ns(now.saturating_sub(h.sent_ns));
                    }
                }
                if let Some(phased) = out.phased.as_mut() {
                    phased.record(h.intended_ns, now.saturating_sub(h.intended_ns));
                }
            }
            Ok(Event::Dropped(n)) => {
                out.dropped_notices += n;
                accounted.store(distinct + out.dropped_notices, Ordering::Relaxed);
            }
            Ok(Event::ServerError(e)) => {
                out.server_errors += 1;
                out.last_server_error = Some(e.to_string());
            }
            Ok(Event::Other) => {}
            Ok(Event::Closed) => {
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

/// Waits until every subscriber has accounted for `expected` pulses (received or announced as
/// shed), or none made progress for `idle_timeout` (the rest are lost), or all of them ended.
pub async fn drain(
    received: &[Arc<AtomicU64>],
    expected: u64,
    idle_timeout: Duration,
    all_done: impl Fn() -> bool,
) {
    drain_each(
        received,
        &vec![expected; received.len()],
        idle_timeout,
        all_done,
    )
    .await
}

/// [`drain`] with a count of its own for each subscriber (`expected[i]` for `received[i]`).
pub async fn drain_each(
    received: &[Arc<AtomicU64>],
    expected: &[u64],
    idle_timeout: Duration,
    all_done: impl Fn() -> bool,
) {
    let mut last_total = u64::MAX;
    let mut idle_since = tokio::time::Instant::now();
    loop {
        let counts: Vec<u64> = received.iter().map(|r| r.load(Ordering::Relaxed)).collect();
        if counts.iter().zip(expected).all(|(&c, &e)| c >= e) || all_done() {
            return;
        }
        let total: u64 = counts.iter().sum();
        if total != last_total {
            last_total = total;
            idle_since = tokio::time::Instant::now();
        } else if idle_since.elapsed() >= idle_timeout {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A progress bar over a run's duration (hidden when disabled or stderr is not a terminal).
pub fn timed_bar(enabled: bool, duration: Duration, what: &str) -> ProgressBar {
    if !enabled {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(duration.as_millis().max(1) as u64);
    pb.set_style(
        ProgressStyle::with_template("{prefix:>10} [{bar:30}] {elapsed:>4}/{duration:4} {msg}")
            .expect("static template")
            .progress_chars("=> "),
    );
    pb.set_prefix(what.to_string());
    pb
}

/// A progress bar over a count.
pub fn count_bar(enabled: bool, len: u64, what: &str) -> ProgressBar {
    if !enabled {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template("{prefix:>10} [{bar:30}] {pos}/{len} {per_sec} {msg}")
            .expect("static template")
            .progress_chars("=> "),
    );
    pb.set_prefix(what.to_string());
    pb
}

/// Messages per second and MB/s (10^6 bytes) over `ns` nanoseconds.
pub fn rates(count: u64, bytes: u64, ns: u64) -> (f64, f64) {
    if ns == 0 {
        return (0.0, 0.0);
    }
    let secs = ns as f64 / 1e9;
    (count as f64 / secs, bytes as f64 / 1e6 / secs)
}

/// SplitMix64: a fixed, fast mix of a 64-bit key, for reproducible "random" pulse contents.
pub fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A value in [0, 1) determined by `key` (53 random bits).
pub fn unit_f64(key: u64) -> f64 {
    (splitmix64(key) >> 11) as f64 / (1u64 << 53) as f64
}
