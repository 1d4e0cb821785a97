//! `params`: a reality parameter broadcast to every session of a reality (FR-EMERG-02).
//!
//! C sessions, spread over source addresses as in `conns`, each hold one subscription in the
//! run's reality, with patterns that differ (and none of which names `sys.param.*`). A
//! controller session sets a parameter (`sys.control.param.set`, payload `arqon.v1.Param`,
//! acked); the bus sequences `sys.param.<name>` with the next version and delivers it once to
//! every connection subscribed to anything in the reality. Each of K sets is timed from the
//! moment the controller wrote it to the median and to the last session's delivery, and every
//! session must receive each version exactly once, with the value that was set.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use arqonbus_proto::v1::{server_frame, Param};
use futures::stream::{self, StreamExt};
use prost::Message;
use tokio::sync::{mpsc, watch};

use super::count_bar;
use crate::driver::arqon;
use crate::payload::now_ns;
use crate::report::{ParamRepeat, ParamsMetrics};
use crate::sys::{open_files, raise_nofile_limit};
use crate::target::Target;

/// The control topic a controller sets a parameter with.
pub const SET_TOPIC: &str = "sys.control.param.set";
pub const PARAM_TYPE_URL: &str = "type.googleapis.com/arqon.v1.Param";

/// Subscription patterns of the sessions, in turn: none matches `sys.param.*` except `>`
/// (which matches every topic), so delivery cannot be explained by the pattern.
const PATTERNS: &[&str] = &[
    "bench.params.a",
    "bench.*.b",
    "bench.>",
    "lab.rig.state",
    "*.x.y.z",
    ">",
];

#[derive(Debug, Clone)]
pub struct ParamsSpec {
    pub sessions: u64,
    pub per_source: u64,
    pub first_source: Ipv4Addr,
    pub concurrency: usize,
    pub repeats: u32,
    /// Topic segments; the pulse is `sys.param.<name>`.
    pub name: String,
    pub token: String,
    /// How long one set may take to reach every session before the rest count as missing.
    pub deliver_timeout: Duration,
    pub pause: Duration,
    pub progress: bool,
}

const RESERVED_FILES: u64 = 64;

/// One session's receipt of a `sys.param.<name>` pulse.
struct Receipt {
    session: u32,
    version: u64,
    number: Option<f64>,
    at_ns: u64,
}

pub async fn run(
    target: &Target,
    reality: &str,
    spec: &ParamsSpec,
    notes: &mut Vec<String>,
) -> Result<ParamsMetrics> {
    let limit = raise_nofile_limit().context("raising RLIMIT_NOFILE")?;
    let open_now = open_files().unwrap_or(16);
    let available = limit.soft.saturating_sub(open_now + RESERVED_FILES + 1);
    let n = spec.sessions.min(available);
    if n < spec.sessions {
        notes.push(format!(
            "asked for {} sessions; the open-file limit ({}) caps this run at {n}",
            spec.sessions, limit.soft
        ));
    }
    let sources = sources(target, n, spec)?;
    let mut m = ParamsMetrics {
        requested_sessions: spec.sessions,
        name: spec.name.clone(),
        patterns: PATTERNS.iter().map(|p| p.to_string()).collect(),
        source_addresses: sources.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    };

    // The controller first: a wrong token should fail the run before 10,000 connections open.
    let controller = arqon::connect_with_token(target.addr, None, "bench-params-ctl", &spec.token)
        .await
        .context("connecting the controller")?;
    let mut controller =
        controller.into_publisher_on(&[(reality.to_string(), SET_TOPIC.to_string())], "ctl");
    let mut acks = controller.take_acks().context("the ack stream")?;

    let pb = count_bar(spec.progress, n, "sessions");
    let started = Instant::now();
    let (tx, mut rx) = mpsc::unbounded_channel::<Receipt>();
    let (stop_tx, stop_rx) = watch::channel(false);
    let topic = format!("sys.param.{}", spec.name);
    let mut tasks = Vec::with_capacity(n as usize);
    let mut failures = 0u64;
    let mut first_failure = None;
    let mut opened = stream::iter(0..n)
        .map(|i| {
            let source = (!sources.is_empty())
                .then(|| IpAddr::V4(sources[(i / spec.per_source.max(1)) as usize]));
            let pattern = PATTERNS[i as usize % PATTERNS.len()];
            async move {
                let mut s = arqon::connect(target.addr, source, "bench-params").await?;
                s.subscribe(&[reality.to_string()], pattern).await?;
                anyhow::Ok((i as u32, s.into_subscriber()))
            }
        })
        .buffer_unordered(spec.concurrency.max(1));
    while let Some(r) = opened.next().await {
        match r {
            Ok((i, sub)) => tasks.push(tokio::spawn(receive(
                i,
                sub,
                topic.clone(),
                tx.clone(),
                stop_rx.clone(),
            ))),
            Err(e) => {
                failures += 1;
                first_failure.get_or_insert_with(|| format!("{e:#}"));
            }
        }
        pb.inc(1);
    }
    drop(opened);
    pb.finish_and_clear();
    m.sessions = tasks.len() as u64;
    m.open_secs = started.elapsed().as_secs_f64();
    if failures > 0 {
        notes.push(format!(
            "{failures} sessions failed to open or subscribe; first: {}",
            first_failure.unwrap_or_default()
        ));
    }
    if m.sessions == 0 {
        bail!("no session could subscribe");
    }
    let c = m.sessions as usize;

    for r in 0..spec.repeats {
        let version = u64::from(r) + 1;
        let number = 0.5 + f64::from(r);
        let param = Param {
            name: spec.name.clone(),
            value: Some(arqonbus_proto::v1::param::Value::Number(number)),
            ..Default::default()
        };
        let set_ns = now_ns();
        let corr = controller
            .send_with(0, true, |msg| {
                msg.payload = Some(prost_types::Any {
                    type_url: PARAM_TYPE_URL.to_string(),
                    value: param.encode_to_vec(),
                });
            })
            .await?;
        controller.flush().await?;
        let mut rep = ParamRepeat {
            version,
            number,
            ..Default::default()
        };
        let mut got: Vec<Option<u64>> = vec![None; c];
        let deadline = tokio::time::Instant::now() + spec.deliver_timeout;
        let mut acked = false;
        while (rep.delivered as usize) < c || !acked {
            tokio::select! {
                receipt = rx.recv() => {
                    let Some(rc) = receipt else { break };
                    account(&mut rep, &mut got, rc, set_ns);
                }
                ack = acks.recv(), if !acked => {
                    let Some(ack) = ack else { bail!("the controller's connection ended") };
                    if ack.correlation_id != corr {
                        continue;
                    }
                    acked = true;
                    match ack.result {
                        Ok(_) => rep.ack_us = Some(now_ns().saturating_sub(set_ns) as f64 / 1e3),
                        Err(e) => bail!("the bus refused the parameter set: {e}"),
                    }
                }
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        // Late or repeated receipts of this version still count (as duplicates) before the
        // next set: wait out the pause taking whatever comes.
        let pause_end = tokio::time::Instant::now() + spec.pause;
        while let Ok(Some(rc)) = tokio::time::timeout_at(pause_end, rx.recv()).await {
            account(&mut rep, &mut got, rc, set_ns);
        }
        if !acked {
            notes.push(format!(
                "set {version}: no PubAck within {:?}",
                spec.deliver_timeout
            ));
        }
        let mut times: Vec<u64> = got.iter().flatten().copied().collect();
        times.sort_unstable();
        rep.missing = (c - times.len()) as u64;
        if let (Some(&last), false) = (times.last(), times.is_empty()) {
            rep.set_to_last_ms = Some(last as f64 / 1e6);
            rep.set_to_median_ms = Some(times[times.len() / 2] as f64 / 1e6);
            rep.set_to_first_ms = Some(times[0] as f64 / 1e6);
        }
        m.repeats.push(rep);
    }
    let _ = stop_tx.send(true);
    for t in tasks {
        let other = t.await.context("session task panicked")?;
        m.other_frames += other.other_frames;
        if other.failure.is_some() {
            m.sessions_failed += 1;
        }
    }
    m.summarize();
    for r in &m.repeats {
        if r.missing + r.wrong_version + r.wrong_value + r.duplicates > 0 {
            notes.push(format!(
                "set {}: {} sessions never got it within {:?}, {} receipts of another version, \
                 {} with another value, {} duplicates",
                r.version,
                r.missing,
                spec.deliver_timeout,
                r.wrong_version,
                r.wrong_value,
                r.duplicates
            ));
        }
    }
    if m.sessions_failed > 0 {
        notes.push(format!(
            "{} sessions' connections failed during the run",
            m.sessions_failed
        ));
    }
    Ok(m)
}

/// Counts one receipt against the set under way (`rep`): its first receipt per session is its
/// delivery time; anything else is a duplicate or of the wrong version or value.
fn account(rep: &mut ParamRepeat, got: &mut [Option<u64>], rc: Receipt, set_ns: u64) {
    if rc.version != rep.version {
        rep.wrong_version += 1;
        return;
    }
    if rc.number != Some(rep.number) {
        rep.wrong_value += 1;
    }
    match &mut got[rc.session as usize] {
        Some(_) => rep.duplicates += 1,
        slot => {
            *slot = Some(rc.at_ns.saturating_sub(set_ns));
            rep.delivered += 1;
        }
    }
}

struct SessionEnd {
    other_frames: u64,
    failure: Option<String>,
}

async fn receive(
    index: u32,
    mut sub: arqon::Subscriber,
    topic: String,
    tx: mpsc::UnboundedSender<Receipt>,
    mut stop: watch::Receiver<bool>,
) -> SessionEnd {
    let mut end = SessionEnd {
        other_frames: 0,
        failure: None,
    };
    loop {
        let frame = tokio::select! {
            biased;
            _ = stop.changed() => break,
            f = sub.next_frame() => f,
        };
        let frame = match frame {
            Ok(Some(f)) => f,
            Ok(None) => {
                end.failure = Some("closed".into());
                break;
            }
            Err(e) => {
                end.failure = Some(format!("{e:#}"));
                break;
            }
        };
        let at_ns = now_ns();
        let Some(server_frame::Kind::Deliver(d)) = frame.kind else {
            end.other_frames += 1;
            continue;
        };
        let Some(msg) = d.message.filter(|m| m.topic == topic) else {
            end.other_frames += 1;
            continue;
        };
        let param = msg
            .payload
            .filter(|a| a.type_url == PARAM_TYPE_URL)
            .and_then(|a| Param::decode(a.value.as_slice()).ok());
        let Some(param) = param else {
            end.other_frames += 1;
            continue;
        };
        let number = match param.value {
            Some(arqonbus_proto::v1::param::Value::Number(x)) => Some(x),
            _ => None,
        };
        let _ = tx.send(Receipt {
            session: index,
            version: param.version,
            number,
            at_ns,
        });
    }
    end
}

/// 127.0.0.2 and up, `per_source` sessions each (none for a target that is not IPv4 loopback).
fn sources(target: &Target, n: u64, spec: &ParamsSpec) -> Result<Vec<Ipv4Addr>> {
    let IpAddr::V4(dst) = target.addr.ip() else {
        return Ok(Vec::new());
    };
    if !dst.is_loopback() {
        return Ok(Vec::new());
    }
    let count = n.div_ceil(spec.per_source.max(1)).max(1);
    let first = u32::from(spec.first_source);
    (0..count)
        .map(|k| {
            let ip = Ipv4Addr::from(first + k as u32);
            if ip.is_loopback() {
                Ok(ip)
            } else {
                bail!("source address {ip} is outside 127.0.0.0/8; raise --per-source")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receipt(session: u32, version: u64, number: f64, at_ns: u64) -> Receipt {
        Receipt {
            session,
            version,
            number: Some(number),
            at_ns,
        }
    }

    #[test]
    fn receipts_are_checked_for_version_value_and_duplicates() {
        let mut rep = ParamRepeat {
            version: 2,
            number: 1.5,
            ..Default::default()
        };
        let mut got = vec![None; 3];
        account(&mut rep, &mut got, receipt(0, 2, 1.5, 1_500), 1_000);
        account(&mut rep, &mut got, receipt(0, 2, 1.5, 1_600), 1_000);
        account(&mut rep, &mut got, receipt(1, 1, 0.5, 1_700), 1_000);
        account(&mut rep, &mut got, receipt(2, 2, 9.0, 1_800), 1_000);
        assert_eq!(got, vec![Some(500), None, Some(800)]);
        assert_eq!(
            (
                rep.delivered,
                rep.duplicates,
                rep.wrong_version,
                rep.wrong_value
            ),
            (2, 1, 1, 1)
        );
    }
}
