//! `tenants`: does one tenant's flood reach another tenant's latency?
//!
//! Tenant B runs an open-loop latency probe on every shard: one publisher and one subscriber
//! connection on shard s, publishing to a reality shard s owns, at a fixed rate, latency taken
//! from each pulse's intended send time. The probe runs through the whole run. Tenant A is idle
//! in the first phase, then floods in one phase per flood kind (publish, history, policy,
//! churn; see [`flood`]), each followed by an idle phase again, so drift shows. B's latency is
//! recorded per phase by the intended send time of each pulse, without the first
//! `settle` of every phase, and each phase's p99 is compared on each shard with the first idle
//! phase's.
//!
//! A's flood runs on a tokio runtime of its own (two threads, optionally niced), so the flood's
//! tasks do not queue in front of B's subscribers in the harness. They still share the
//! machine's cores with the bus: read the CPU table beside the latencies.

mod flood;
pub mod plan;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio::sync::watch;
use tokio::time::Instant;

use self::flood::{FloodCounters, FloodSetup, FloodTimes};
use self::plan::{FloodKind, Phase};
use super::flow::{note_named_subscriber_trouble, note_trouble};
use super::open_loop::{self, SendPlan, SenderOutcome};
use super::{drain_each, run_phased_subscriber, timed_bar, SubOutcome};
use crate::driver::arqon::{self, HistoryEvent, TOPIC};
use crate::driver::{Names, Publisher, Subscriber};
use crate::payload::now_ns;
use crate::placement::{connect_on_shard, owner_shard, reality_owned_by};
use crate::report::{
    FloodShard, HistoryReality, ProbeShard, TenantsMetrics, TenantsPhase, TenantsShardPhase,
};
use crate::stats::PhaseWindows;
use crate::sys::{set_thread_nice, CpuSnapshot, CpuUse};
use crate::target::Target;

#[derive(Debug, Clone)]
pub struct TenantsSpec {
    pub token_a: String,
    pub token_b: String,
    pub shards: u32,
    /// B's pulses per second on each shard.
    pub probe_rate_per_s: u64,
    pub payload_bytes: usize,
    pub flood_payload_bytes: usize,
    /// A's connections (churn: connection slots) per shard.
    pub flood_connections: usize,
    pub floods: Vec<FloodKind>,
    pub phase: Duration,
    pub warmup: Duration,
    /// The start of every phase that is not measured.
    pub settle: Duration,
    /// Retained realities of A's, pre-filled; each shard's readers read those it owns.
    pub history_realities: Vec<String>,
    pub history_inflight: usize,
    /// A reality of A's whose policy refuses every pulse (by burning its fuel).
    pub policy_reality: String,
    pub policy_inflight: usize,
    /// Reality name prefixes the tokens' grants cover (`<prefix>-*`).
    pub a_prefix: String,
    pub b_prefix: String,
    pub flood_nice: i32,
    pub target_ratio: f64,
    pub fail_over: Option<f64>,
    pub drain_timeout: Duration,
    pub server_pid: Option<u32>,
    pub progress: bool,
}

/// Runs the phases; the metrics, and whether the run passed its own checks (no probe pulse lost
/// or unsent, every flood did something, and `--fail-over` when given). Why it did not is in
/// `notes`.
pub async fn run(
    target: &Target,
    names: &Names,
    spec: &TenantsSpec,
    notes: &mut Vec<String>,
) -> Result<(TenantsMetrics, bool)> {
    let addr = target.addr;
    let shards = spec.shards;
    let phases = plan::phases(&spec.floods);
    let tag = &names.tag;
    let probe_realities: Vec<String> = (0..shards)
        .map(|s| reality_owned_by(&format!("{}-{tag}-probe", spec.b_prefix), s, shards))
        .collect();
    let publish_realities: Vec<String> = (0..shards)
        .map(|s| reality_owned_by(&format!("{}-{tag}-flood", spec.a_prefix), s, shards))
        .collect();

    // What the floods need is checked before anything is measured.
    let mut history_realities = Vec::new();
    let mut history_by_shard = vec![Vec::new(); shards as usize];
    if spec.floods.contains(&FloodKind::History) {
        history_realities = check_history(addr, spec).await?;
        let owners: Vec<(String, u32)> = history_realities
            .iter()
            .map(|h| (h.name.clone(), h.owner))
            .collect();
        history_by_shard = plan::history_readers(&owners, shards);
        for h in &mut history_realities {
            h.read_by = (0..shards)
                .filter(|&s| history_by_shard[s as usize].contains(&h.name))
                .collect();
        }
        for (s, list) in history_by_shard.iter().enumerate() {
            if !owners.iter().any(|(_, o)| *o == s as u32) {
                notes.push(format!(
                    "no --history-reality is owned by shard {s}: its readers read {} (owned \
                     elsewhere, so their reads cross shards)",
                    list.join(", ")
                ));
            }
        }
    }
    if spec.floods.contains(&FloodKind::Policy) {
        let refusal = check_policy(addr, spec).await?;
        notes.push(format!(
            "policy check: an acked publish to `{}` was refused with {refusal}",
            spec.policy_reality
        ));
    }

    // B's probe: a subscriber and a publisher on every shard, each shard's own reality.
    let mut subscribers = Vec::new();
    let mut publishers = Vec::new();
    for (s, reality) in probe_realities.iter().enumerate() {
        let s = s as u32;
        let mut sub = connect_on_shard(addr, "tenant-b-sub", &spec.token_b, s, shards)
            .await
            .with_context(|| format!("placing B's subscriber on shard {s}"))?;
        sub.subscribe(std::slice::from_ref(reality), TOPIC)
            .await
            .with_context(|| format!("B subscribing to {reality}"))?;
        subscribers.push(Subscriber::Arqon(sub.into_subscriber()));
        let publisher = connect_on_shard(addr, "tenant-b-pub", &spec.token_b, s, shards)
            .await
            .with_context(|| format!("placing B's publisher on shard {s}"))?;
        publishers.push(Publisher::Arqon(
            publisher.into_publisher(std::slice::from_ref(reality), "tenant-b-probe"),
        ));
    }

    let nice_failed = Arc::new(AtomicBool::new(false));
    let flood_rt = flood_runtime(spec.flood_nice, nice_failed.clone())?;

    // One schedule for every shard's probe, so the phases are the same windows everywhere.
    let start_ns = now_ns() + 100_000_000;
    let windows = PhaseWindows {
        first_ns: start_ns + spec.warmup.as_nanos() as u64,
        phase_ns: spec.phase.as_nanos() as u64,
        settle_ns: spec.settle.as_nanos() as u64,
        phases: phases.len(),
    };
    let total = Duration::from_nanos(windows.end_ns() - start_ns);
    let scheduled = SendPlan::pulses_over(total.as_secs_f64(), spec.probe_rate_per_s);
    let (stop_tx, stop_rx) = watch::channel(false);
    let accounted: Vec<Arc<AtomicU64>> = (0..shards).map(|_| Arc::default()).collect();
    let sub_tasks: Vec<_> = subscribers
        .into_iter()
        .zip(&accounted)
        .map(|(sub, a)| {
            tokio::spawn(run_phased_subscriber(
                sub,
                stop_rx.clone(),
                a.clone(),
                windows,
            ))
        })
        .collect();
    let mut senders = Vec::new();
    for (s, publisher) in publishers.into_iter().enumerate() {
        let plan = SendPlan {
            start_ns,
            rate_per_s: spec.probe_rate_per_s,
            scheduled,
            warmup_end_ns: windows.first_ns,
            payload_bytes: spec.payload_bytes,
            spin_us: 0,
            publisher: 0,
            routes: 1,
        };
        let name = format!("tenant-b-sender-{s}");
        senders.push(open_loop::spawn(&name, publisher, plan, Arc::default())?);
    }

    let setup = Arc::new(FloodSetup {
        addr,
        token: spec.token_a.clone(),
        shards,
        connections: spec.flood_connections,
        payload_bytes: spec.flood_payload_bytes,
        publish_realities,
        history_realities: history_by_shard,
        history_inflight: spec.history_inflight,
        policy_reality: spec.policy_reality.clone(),
        policy_inflight: spec.policy_inflight,
        handshake_timeout: Duration::from_secs(5),
    });
    let pb = timed_bar(spec.progress, total, "tenants");
    let ticker = {
        let (pb, began) = (pb.clone(), tokio::time::Instant::now());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                pb.set_position(began.elapsed().as_millis() as u64);
            }
        })
    };
    sleep_until_ns(windows.first_ns).await;
    let mut ran = Vec::new();
    for (p, phase) in phases.iter().enumerate() {
        let (begin, end) = windows.bounds(p);
        sleep_until_ns(begin).await;
        pb.set_message(phase.name.clone());
        let cpu_before = CpuSnapshot::take(spec.server_pid);
        let flood = match phase.flood {
            Some(kind) => {
                let counters = Arc::new(FloodCounters::new(shards));
                let times = flood_rt
                    .spawn(flood::run(
                        kind,
                        setup.clone(),
                        counters.clone(),
                        instant_at(end),
                    ))
                    .await
                    .context("a flood task panicked")?;
                Some((counters, times))
            }
            None => {
                sleep_until_ns(end).await;
                None
            }
        };
        let cpu = cpu_before
            .zip(CpuSnapshot::take(spec.server_pid))
            .map(|(a, b)| a.until(&b));
        ran.push((flood, cpu));
    }
    // A is done: its runtime's threads are not wanted while B's last pulses drain.
    flood_rt.shutdown_background();

    let mut outcomes = Vec::new();
    for sender in senders {
        outcomes.push(open_loop::join(sender).await?);
    }
    pb.set_message("draining");
    let sent: Vec<u64> = outcomes.iter().map(|o| o.stats.sent).collect();
    drain_each(&accounted, &sent, spec.drain_timeout, || {
        sub_tasks.iter().all(|t| t.is_finished())
    })
    .await;
    let _ = stop_tx.send(true);
    ticker.abort();
    pb.finish_and_clear();
    let mut received = Vec::new();
    for t in sub_tasks {
        received.push(t.await.context("a subscriber task panicked")?);
    }

    let probes = probe_results(&probe_realities, scheduled, &outcomes, &received, notes)?;
    let phases_out = phase_results(&phases, &ran, &received, spec.target_ratio);
    if nice_failed.load(Ordering::Relaxed) {
        notes.push(format!(
            "the flooding threads could not be set to nice {}; they ran at the harness's priority",
            spec.flood_nice
        ));
    }
    let m = TenantsMetrics {
        shards,
        probe_rate_per_s: spec.probe_rate_per_s,
        probe_payload_bytes: spec.payload_bytes.max(crate::payload::HEADER_BYTES),
        flood_payload_bytes: spec.flood_payload_bytes.max(crate::payload::HEADER_BYTES),
        flood_connections: spec.flood_connections,
        warmup_secs: spec.warmup.as_secs_f64(),
        phase_secs: spec.phase.as_secs_f64(),
        settle_secs: spec.settle.as_secs_f64(),
        target_ratio: spec.target_ratio,
        fail_over: spec.fail_over,
        flood_nice: spec.flood_nice,
        probes,
        history_realities,
        policy_reality: spec
            .floods
            .contains(&FloodKind::Policy)
            .then(|| spec.policy_reality.clone()),
        phases: phases_out,
    };
    note_unsteady_reference(&m, notes);
    let passed = judge(&m, notes);
    Ok((m, passed))
}

/// Says when the reference is not to be trusted: the quiet phases disagree by more than the
/// target on some shard (every ratio then moves with the noise, not with A), or the hypervisor
/// took a noticeable share of the machine in some phase.
fn note_unsteady_reference(m: &TenantsMetrics, notes: &mut Vec<String>) {
    for s in 0..m.shards as usize {
        let quiet: Vec<f64> = m
            .phases
            .iter()
            .filter(|p| p.flood.is_none())
            .filter_map(|p| p.shards.get(s).map(|x| x.latency.p99_us))
            .collect();
        if let Some(spread) = plan::quiet_spread(&quiet) {
            if spread > m.target_ratio {
                notes.push(format!(
                    "the quiet phases disagree on shard {s}: their p99s span {spread:.1}x ({}); \
                     with a reference this unsteady the ratios say more about the machine than \
                     about A",
                    quiet
                        .iter()
                        .map(|v| format!("{v:.0} µs"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        }
    }
    let stolen: Vec<String> = m
        .phases
        .iter()
        .filter_map(|p| {
            let steal = p.cpu?.steal;
            (steal >= 0.1).then(|| format!("{} {steal:.2}", p.name))
        })
        .collect();
    if !stolen.is_empty() {
        notes.push(format!(
            "the hypervisor took cores from this machine (steal, in cores: {}); B's latencies in \
             those phases include the machine's stalls",
            stolen.join(", ")
        ));
    }
}

/// The run's own checks; each failure is said in `notes`.
fn judge(m: &TenantsMetrics, notes: &mut Vec<String>) -> bool {
    let mut passed = true;
    for p in &m.probes {
        if p.lost > 0 || p.not_sent > 0 {
            passed = false;
            notes.push(format!(
                "B's probe on shard {} lost {} of {} pulses ({} announced as shed) and did not \
                 send {}: B's pulses must all arrive",
                p.shard, p.lost, p.sent, p.dropped_notices, p.not_sent
            ));
        }
    }
    for p in &m.phases {
        let (Some(kind), idle) = (
            &p.flood,
            p.shards
                .iter()
                // A history read longer than the phase completes no read but still loads the
                // bus: nothing done is no operation and no pulse.
                .filter(|s| s.flood.as_ref().is_some_and(|f| f.ops + f.pulses == 0))
                .map(|s| s.shard.to_string())
                .collect::<Vec<_>>(),
        ) else {
            continue;
        };
        if !idle.is_empty() {
            passed = false;
            notes.push(format!(
                "the {kind} flood did nothing on shard(s) {} (see A's failures): that phase \
                 measures nothing",
                idle.join(", ")
            ));
        }
    }
    if let Some(limit) = m.fail_over {
        if !m.all_within(limit) {
            passed = false;
            let worst: Vec<String> = m
                .worst_ratios()
                .iter()
                .map(|(k, r)| match r {
                    Some(r) => format!("{k} {r:.2}x"),
                    None => format!("{k} no ratio"),
                })
                .collect();
            notes.push(format!(
                "--fail-over {limit}: B's p99 under A's flood went over {limit}x its quiet p99 \
                 (worst shard per flood: {})",
                worst.join(", ")
            ));
        }
    }
    passed
}

/// B's probe per shard over the whole run.
fn probe_results(
    realities: &[String],
    scheduled: u64,
    senders: &[SenderOutcome],
    received: &[SubOutcome],
    notes: &mut Vec<String>,
) -> Result<Vec<ProbeShard>> {
    let mut out = Vec::new();
    for (s, ((reality, o), r)) in realities.iter().zip(senders).zip(received).enumerate() {
        if let Some(f) = &o.stats.failure {
            bail!(
                "B's sender on shard {s} failed after {} of {scheduled} pulses: {f}",
                o.stats.sent
            );
        }
        let loss = r.tracker.report(&[o.stats.sent]);
        note_named_subscriber_trouble(
            &format!("B's subscriber on shard {s}"),
            r,
            loss.unexpected,
            notes,
        );
        note_trouble(
            &format!("B's publisher on shard {s}"),
            &o.publisher.trouble(),
            notes,
        );
        let max_lag_us = o.stats.max_lag_ns as f64 / 1e3;
        if max_lag_us > 1_000.0 {
            notes.push(format!(
                "B's sender on shard {s} fell up to {max_lag_us:.0} µs behind its schedule (the \
                 bus pushed back or the harness was descheduled); that time is inside B's \
                 latencies"
            ));
        }
        out.push(ProbeShard {
            shard: s as u32,
            reality: reality.clone(),
            scheduled,
            sent: o.stats.sent,
            not_sent: scheduled - o.stats.sent,
            received: loss.received,
            lost: loss.lost,
            duplicates: loss.duplicates,
            out_of_order: loss.out_of_order,
            dropped_notices: r.dropped_notices,
            max_sender_lag_us: max_lag_us,
            send_lateness: o.stats.lateness.summary(),
        });
    }
    Ok(out)
}

/// What one phase left behind: A's flood (when it flooded) and the CPU over the phase.
type Ran = (Option<(Arc<FloodCounters>, FloodTimes)>, Option<CpuUse>);

/// Each phase's latencies per shard, judged against the first (quiet) phase's.
fn phase_results(
    phases: &[Phase],
    ran: &[Ran],
    received: &[SubOutcome],
    target: f64,
) -> Vec<TenantsPhase> {
    let latency = |s: usize, p: usize| {
        received[s]
            .phased
            .as_ref()
            .map(|h| h.phases[p].clone())
            .unwrap_or_default()
    };
    phases
        .iter()
        .zip(ran)
        .enumerate()
        .map(|(p, (phase, (flood, cpu)))| {
            let shards = (0..received.len())
                .map(|s| {
                    let (here, quiet) = (latency(s, p).summary(), latency(s, 0).summary());
                    let ratio = plan::p99_ratio(here.p99_us, here.count, quiet.p99_us, quiet.count);
                    TenantsShardPhase {
                        shard: s as u32,
                        curve: latency(s, p).curve(),
                        latency: here,
                        p99_ratio: ratio,
                        within_target: phase.flood.and_then(|_| plan::within(ratio, target)),
                        flood: flood
                            .as_ref()
                            .map(|(c, t)| flood_shard(&c.shards[s], t.active_secs)),
                    }
                })
                .collect();
            TenantsPhase {
                name: phase.name.clone(),
                flood: phase.flood.map(|k| k.name().to_string()),
                setup_ms: flood.as_ref().map(|(_, t)| t.setup_ms),
                flood_secs: flood.as_ref().map(|(_, t)| t.active_secs),
                flood_failures: flood
                    .as_ref()
                    .map(|(c, _)| c.failures.lock().expect("not poisoned").clone())
                    .unwrap_or_default(),
                cpu: *cpu,
                shards,
            }
        })
        .collect()
}

fn flood_shard(c: &flood::ShardCounters, secs: f64) -> FloodShard {
    let per_s = |n: u64| if secs > 0.0 { n as f64 / secs } else { 0.0 };
    let (ops, pulses) = (
        c.ops.load(Ordering::Relaxed),
        c.pulses.load(Ordering::Relaxed),
    );
    FloodShard {
        ops,
        ops_per_s: per_s(ops),
        pulses,
        pulses_per_s: per_s(pulses),
        shed: c.shed.load(Ordering::Relaxed),
        refused: c.refused.lock().expect("not poisoned").clone(),
    }
}

/// Reads each history reality once, whole, as tenant A: its owner and how many pulses it holds.
/// A reality A cannot read, or an empty one, stops the run before it starts.
async fn check_history(addr: SocketAddr, spec: &TenantsSpec) -> Result<Vec<HistoryReality>> {
    if spec.history_realities.is_empty() {
        bail!("the history flood needs --history-reality (a retained reality of A's, pre-filled)");
    }
    let mut session = arqon::connect_with_token(addr, None, "tenant-a-check", &spec.token_a)
        .await
        .context("connecting as tenant A")?;
    let mut out = Vec::new();
    for name in &spec.history_realities {
        let corr = session.send_history_get(name, ">", 0).await?;
        let mut counted = 0;
        let pulses = loop {
            match session.next_history_event().await? {
                HistoryEvent::Chunk {
                    correlation_id,
                    pulses,
                } if correlation_id == corr => counted += pulses,
                HistoryEvent::End {
                    correlation_id,
                    count,
                } if correlation_id == corr => break count,
                HistoryEvent::Error {
                    correlation_id,
                    error,
                } if correlation_id == corr => bail!(
                    "HistoryGet of `{name}` as tenant A was answered with {error}: the history \
                     flood needs a retained reality that A may read, pre-filled \
                     (bench/tenants.sh makes them)"
                ),
                _ => continue,
            }
        };
        if pulses == 0 {
            bail!("history reality `{name}` holds no pulses: pre-fill it before the run");
        }
        if counted != pulses {
            // The flood counts pulses the same way; a mismatch would make its figures wrong.
            bail!(
                "reading `{name}`, the chunks held {counted} pulses but HistoryEnd says {pulses}"
            );
        }
        out.push(HistoryReality {
            name: name.clone(),
            owner: owner_shard(name, spec.shards),
            pulses,
            read_by: Vec::new(),
        });
    }
    Ok(out)
}

/// Publishes one acked pulse to the policy reality as tenant A: the policy must refuse it
/// (POLICY_FAULT or POLICY_DENIED), else the policy flood would measure plain publishes. The
/// refusal, for the notes.
async fn check_policy(addr: SocketAddr, spec: &TenantsSpec) -> Result<String> {
    let session = arqon::connect_with_token(addr, None, "tenant-a-check", &spec.token_a)
        .await
        .context("connecting as tenant A")?;
    let reality = &spec.policy_reality;
    let mut p = session.into_publisher(std::slice::from_ref(reality), "tenant-a-check");
    let mut answers = p.take_acks().context("the answer stream")?;
    p.send(
        0,
        &flood::flood_header(0, 0),
        spec.flood_payload_bytes,
        true,
    )
    .await?;
    p.flush().await?;
    let answer = tokio::time::timeout(Duration::from_secs(10), answers.recv())
        .await
        .with_context(|| format!("no answer to a publish to `{reality}` in 10 s"))?
        .context("the server closed the connection")?;
    match answer.result {
        Err(e) if e.name == "POLICY_FAULT" || e.name == "POLICY_DENIED" => Ok(e.to_string()),
        Err(e) => {
            bail!("a publish to `{reality}` as tenant A was refused with {e}, not by a policy")
        }
        Ok(seq) => bail!(
            "a publish to `{reality}` was accepted (sequence {seq}): no policy refuses it, so \
             the policy flood would measure plain publishes; bind the fuel-burning policy to it \
             (bench/tenants.sh loads tests/fixtures/policy/infinite_loop.wat)"
        ),
    }
}

/// The runtime A's floods run on: two threads, at nice `nice` when it is not 0.
fn flood_runtime(nice: i32, failed: Arc<AtomicBool>) -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("tenant-a-flood")
        .enable_all()
        .on_thread_start(move || {
            if nice != 0 && set_thread_nice(nice).is_err() {
                failed.store(true, Ordering::Relaxed);
            }
        })
        .build()
        .context("starting the flood runtime")
}

/// The tokio instant of `ns` on the harness's clock.
fn instant_at(ns: u64) -> Instant {
    Instant::now() + Duration::from_nanos(ns.saturating_sub(now_ns()))
}

async fn sleep_until_ns(ns: u64) {
    tokio::time::sleep_until(instant_at(ns)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phase(flood: Option<&str>, ratios: [f64; 2], ops: u64) -> TenantsPhase {
        TenantsPhase {
            name: flood.unwrap_or("quiet").to_string(),
            flood: flood.map(str::to_string),
            shards: ratios
                .iter()
                .enumerate()
                .map(|(s, &r)| TenantsShardPhase {
                    shard: s as u32,
                    p99_ratio: Some(r),
                    flood: flood.map(|_| FloodShard {
                        ops,
                        ..Default::default()
                    }),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    fn metrics(phases: Vec<TenantsPhase>, lost: u64, fail_over: Option<f64>) -> TenantsMetrics {
        TenantsMetrics {
            probes: vec![ProbeShard {
                lost,
                ..Default::default()
            }],
            phases,
            fail_over,
            ..Default::default()
        }
    }

    #[test]
    fn a_run_fails_on_loss_an_idle_flood_or_fail_over_only() {
        let ok = vec![
            phase(None, [1.0, 1.0], 0),
            phase(Some("publish"), [1.4, 2.5], 10),
        ];
        let mut notes = Vec::new();
        assert!(
            judge(&metrics(ok.clone(), 0, None), &mut notes),
            "{notes:?}"
        );
        assert!(notes.is_empty());
        assert!(judge(&metrics(ok.clone(), 0, Some(3.0)), &mut notes));
        assert!(!judge(&metrics(ok.clone(), 0, Some(2.0)), &mut notes));
        assert!(notes[0].contains("publish 2.50x"), "{notes:?}");
        assert!(!judge(&metrics(ok, 1, None), &mut notes), "a lost B pulse");
        let idle = vec![
            phase(None, [1.0, 1.0], 0),
            phase(Some("churn"), [1.0, 1.0], 0),
        ];
        notes.clear();
        assert!(!judge(&metrics(idle, 0, None), &mut notes));
        assert!(notes[0].contains("churn flood did nothing"), "{notes:?}");
    }
}
