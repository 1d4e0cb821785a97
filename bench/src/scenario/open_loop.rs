//! The open-loop sender of `latency` and `tenants`: pulses on a fixed schedule, each stamped
//! with its intended send time, sent from an OS thread of its own.
//!
//! The sender runs with a 1 µs timer slack: tokio's timer wheel has a 1 ms resolution, far too
//! coarse for a schedule of one pulse every 20 µs. It drives the async publisher through the
//! runtime's handle, one burst (the pulses due now) at a time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};

use crate::driver::Publisher;
use crate::payload::{now_ns, Header, FLAG_WARMUP};
use crate::schedule::OpenLoop;
use crate::stats::Latency;
use crate::sys::set_thread_timer_slack_ns;

/// What one sender sends.
#[derive(Debug, Clone)]
pub struct SendPlan {
    /// When pulse 0 is meant to leave (ns since the harness's epoch, [`now_ns`]).
    pub start_ns: u64,
    pub rate_per_s: u64,
    /// Pulses in all.
    pub scheduled: u64,
    /// Pulses meant to leave before this are flagged warm-up (checked for loss, not measured).
    pub warmup_end_ns: u64,
    pub payload_bytes: usize,
    /// Spin (instead of sleeping) for the last this-many microseconds before a send.
    pub spin_us: u64,
    /// `Header.publisher` of every pulse.
    pub publisher: u32,
    /// Pulse `i` goes to route (reality) `i % routes`.
    pub routes: u64,
}

impl SendPlan {
    /// How many pulses `secs` seconds at `rate_per_s` hold (at least one).
    pub fn pulses_over(secs: f64, rate_per_s: u64) -> u64 {
        (secs * rate_per_s as f64).round().max(1.0) as u64
    }
}

/// The most pulses sent in one burst before looking at the clock again.
const MAX_BURST: u64 = 256;
/// A sender still behind schedule this long after the schedule's end stops (the rest are
/// reported as not sent) so that a wedged bus cannot keep the run going forever.
pub const GIVE_UP_AFTER_END: Duration = Duration::from_secs(10);

pub struct SenderStats {
    pub sent: u64,
    pub warmup_sent: u64,
    pub max_lag_ns: u64,
    /// Actual send time minus intended send time.
    pub lateness: Latency,
    pub first_ns: u64,
    pub last_ns: u64,
    pub failure: Option<String>,
}

pub struct SenderOutcome {
    pub stats: SenderStats,
    pub publisher: Publisher,
}

/// Starts the sender thread `name`; `sent_counter` follows its progress.
pub fn spawn(
    name: &str,
    publisher: Publisher,
    plan: SendPlan,
    sent_counter: Arc<AtomicU64>,
) -> Result<std::thread::JoinHandle<SenderOutcome>> {
    let handle = tokio::runtime::Handle::current();
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || send_on_schedule(handle, publisher, plan, sent_counter))
        .context("starting the sender thread")
}

/// Waits for a sender thread without blocking the runtime.
pub async fn join(sender: std::thread::JoinHandle<SenderOutcome>) -> Result<SenderOutcome> {
    tokio::task::spawn_blocking(move || sender.join())
        .await
        .context("joining the sender")?
        .map_err(|_| anyhow!("the sender thread panicked"))
}

fn send_on_schedule(
    handle: tokio::runtime::Handle,
    mut publisher: Publisher,
    plan: SendPlan,
    sent_counter: Arc<AtomicU64>,
) -> SenderOutcome {
    set_thread_timer_slack_ns(1_000);
    let mut schedule = OpenLoop::new(plan.start_ns, plan.rate_per_s, plan.scheduled);
    let give_up = schedule.intended_ns(plan.scheduled) + GIVE_UP_AFTER_END.as_nanos() as u64;
    let spin_ns = plan.spin_us * 1_000;
    let routes = plan.routes.max(1);
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
                let warm = intended < plan.warmup_end_ns;
                let h = Header {
                    publisher: plan.publisher,
                    seq: i,
                    reality: (i % routes) as u32,
                    flags: if warm { FLAG_WARMUP } else { 0 },
                    intended_ns: intended,
                    sent_ns,
                };
                publisher
                    .send(h.reality as usize, &h, plan.payload_bytes)
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
