//! What a run produces: one JSON document per run, the same as a Markdown table, and the
//! headline numbers `summarize` compares across targets.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::stats::LatencySummary;

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Ok,
    /// The target does not offer what the scenario needs (e.g. retained realities).
    Unsupported,
    Failed,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunResult {
    pub scenario: String,
    /// Names the variant within a comparison (`latency-10000`); results of the same label on
    /// different targets are compared.
    pub label: String,
    /// `arqonbus` or `nats`.
    pub target: String,
    pub target_url: String,
    pub started_unix_ms: u64,
    pub elapsed_s: f64,
    pub status: Status,
    /// Things a reader must know to trust the numbers (caps, losses, errors, lag).
    pub notes: Vec<String>,
    pub params: BTreeMap<String, serde_json::Value>,
    pub metrics: Option<Metrics>,
    /// The server's resident memory before and after the run, with --server-pid.
    pub server_rss_before_bytes: Option<u64>,
    pub server_rss_after_bytes: Option<u64>,
    /// Average CPU use during the run, in cores: harness, server (with --server-pid), others.
    #[serde(default)]
    pub cpu: Option<crate::sys::CpuUse>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Metrics {
    Flow(FlowMetrics),
    Latency(Box<LatencyMetrics>),
    Conns(ConnsMetrics),
    Durable(DurableMetrics),
}

/// Throughput and fan-out.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FlowMetrics {
    pub published: u64,
    /// From the first publish to the last one written out, over all publishers.
    pub publish_secs: f64,
    pub publish_msgs_per_s: f64,
    pub publish_mb_per_s: f64,
    /// Distinct pulses received, summed over subscribers.
    pub deliveries: u64,
    /// From the first receipt by any subscriber to the last by any.
    pub delivery_secs: f64,
    pub deliveries_per_s: f64,
    pub delivery_mb_per_s: f64,
    pub min_subscriber_msgs_per_s: f64,
    pub mean_subscriber_msgs_per_s: f64,
    pub lost: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    /// Pulses the server said it shed (ArqonBus `Dropped`).
    pub dropped_notices: u64,
    pub subscribers: Vec<SubscriberFlow>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SubscriberFlow {
    pub index: usize,
    pub expected: u64,
    pub received: u64,
    pub lost: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    pub dropped_notices: u64,
    /// Over this subscriber's first to last receipt.
    pub msgs_per_s: f64,
    pub mb_per_s: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LatencyMetrics {
    pub rate_per_s: u64,
    pub scheduled: u64,
    pub sent: u64,
    /// Pulses the sender never got to: it was still behind schedule at the give-up deadline.
    pub not_sent: u64,
    /// Pulses sent during warm-up (counted for loss, not for latency).
    pub warmup_sent: u64,
    pub achieved_send_rate_per_s: f64,
    /// How far behind its schedule the sender got at worst.
    pub max_sender_lag_us: f64,
    /// Actual send time minus intended send time: the harness's own lateness.
    pub send_lateness: LatencySummary,
    /// Receipt minus intended send time: the number to quote (includes stalls).
    pub from_intended: LatencySummary,
    /// Receipt minus actual send time.
    pub from_send: LatencySummary,
    pub subscribers: usize,
    pub expected: u64,
    pub received: u64,
    pub lost: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    pub dropped_notices: u64,
    /// Percentile curves (percentile, µs) for the plots.
    pub curve_from_intended: Vec<(f64, f64)>,
    pub curve_from_send: Vec<(f64, f64)>,
    /// Worst latency (from intended send) per 100 ms of the schedule: stalls over time.
    #[serde(default)]
    pub timeline: Vec<crate::stats::Window>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ConnsMetrics {
    pub requested: u64,
    /// What the open-file limit allowed, when it is below `requested`.
    pub capped_to: Option<u64>,
    pub file_limit_soft: u64,
    pub file_limit_hard: u64,
    pub source_addresses: Vec<String>,
    pub established: u64,
    pub failed: u64,
    pub failures: BTreeMap<String, u64>,
    pub open_secs: f64,
    pub handshakes_per_s: f64,
    /// Connections that were closed by the server while held idle.
    pub closed_during_hold: u64,
    pub hold_secs: f64,
    pub rss_before_bytes: Option<u64>,
    pub rss_after_bytes: Option<u64>,
    pub rss_after_close_bytes: Option<u64>,
    pub bytes_per_conn: Option<f64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DurableMetrics {
    /// What made the publishes durable (retained reality, JetStream file stream).
    pub storage: String,
    pub inflight: usize,
    pub sent: u64,
    pub acked: u64,
    pub failed: u64,
    pub secs: f64,
    pub acked_per_s: f64,
    pub mb_per_s: f64,
    pub ack_latency: LatencySummary,
}

/// Whether a larger number is the better one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Better {
    Higher,
    Lower,
}

/// One number a comparison puts side by side.
#[derive(Debug, Clone)]
pub struct Headline {
    pub name: &'static str,
    pub value: f64,
    pub better: Better,
}

fn h(name: &'static str, value: f64, better: Better) -> Headline {
    Headline {
        name,
        value,
        better,
    }
}

impl Metrics {
    pub fn headlines(&self) -> Vec<Headline> {
        use Better::*;
        match self {
            Metrics::Flow(m) => vec![
                h("publish msgs/s", m.publish_msgs_per_s, Higher),
                h("deliveries/s (all subscribers)", m.deliveries_per_s, Higher),
                h(
                    "slowest subscriber msgs/s",
                    m.min_subscriber_msgs_per_s,
                    Higher,
                ),
                h("delivered MB/s", m.delivery_mb_per_s, Higher),
                h("lost pulses", m.lost as f64, Lower),
            ],
            Metrics::Latency(m) => vec![
                h("p50 µs (from intended send)", m.from_intended.p50_us, Lower),
                h("p90 µs (from intended send)", m.from_intended.p90_us, Lower),
                h("p99 µs (from intended send)", m.from_intended.p99_us, Lower),
                h(
                    "p99.9 µs (from intended send)",
                    m.from_intended.p999_us,
                    Lower,
                ),
                h(
                    "p99.99 µs (from intended send)",
                    m.from_intended.p9999_us,
                    Lower,
                ),
                h("max µs (from intended send)", m.from_intended.max_us, Lower),
                h("p50 µs (from actual send)", m.from_send.p50_us, Lower),
                h("p99 µs (from actual send)", m.from_send.p99_us, Lower),
                h("lost pulses", m.lost as f64, Lower),
            ],
            Metrics::Conns(m) => {
                let mut v = vec![
                    h("connections established", m.established as f64, Higher),
                    h("handshakes/s", m.handshakes_per_s, Higher),
                ];
                if let Some(b) = m.bytes_per_conn {
                    v.push(h("server RSS bytes/connection", b, Lower));
                }
                v
            }
            Metrics::Durable(m) => vec![
                h("acked publishes/s", m.acked_per_s, Higher),
                h("ack p50 µs", m.ack_latency.p50_us, Lower),
                h("ack p99 µs", m.ack_latency.p99_us, Lower),
                h("ack max µs", m.ack_latency.max_us, Lower),
            ],
        }
    }
}

/// A number for a table: integers without decimals, others with three significant-ish digits.
pub fn fmt_num(v: f64) -> String {
    if !v.is_finite() {
        return "–".to_string();
    }
    let a = v.abs();
    if a >= 100.0 || v.fract() == 0.0 {
        group_thousands(v.round() as i64)
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn group_thousands(n: i64) -> String {
    let s = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
}

fn lat_row(md: &mut String, name: &str, s: &LatencySummary) {
    let _ = writeln!(
        md,
        "| {name} | {} | {} | {} | {} | {} | {} | {} |",
        fmt_num(s.p50_us),
        fmt_num(s.p90_us),
        fmt_num(s.p99_us),
        fmt_num(s.p999_us),
        fmt_num(s.p9999_us),
        fmt_num(s.max_us),
        fmt_num(s.count as f64)
    );
}

impl RunResult {
    /// The run as Markdown: a heading, the parameters, a table of metrics, the notes.
    pub fn to_markdown(&self) -> String {
        let mut md = String::new();
        let status = match self.status {
            Status::Ok => "ok",
            Status::Unsupported => "UNSUPPORTED",
            Status::Failed => "FAILED",
        };
        let _ = writeln!(md, "### {} — {} ({status})\n", self.label, self.target);
        let params: Vec<String> = self
            .params
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let _ = writeln!(
            md,
            "`{}` {}; {:.1} s\n",
            self.target_url,
            params.join(" "),
            self.elapsed_s
        );
        match &self.metrics {
            Some(Metrics::Latency(m)) => {
                let _ = writeln!(
                    md,
                    "| latency µs | p50 | p90 | p99 | p99.9 | p99.99 | max | samples |"
                );
                let _ = writeln!(
                    md,
                    "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
                );
                lat_row(&mut md, "from intended send", &m.from_intended);
                lat_row(&mut md, "from actual send", &m.from_send);
                lat_row(&mut md, "sender lateness", &m.send_lateness);
                let _ = writeln!(
                    md,
                    "\nrate {}/s: scheduled {}, sent {} ({} in warm-up, {} not sent), achieved {}/s, \
                     worst sender lag {} µs; received {} of {} expected, lost {}, duplicates {}, \
                     out of order {}, shed notices {}\n",
                    fmt_num(m.rate_per_s as f64),
                    fmt_num(m.scheduled as f64),
                    fmt_num(m.sent as f64),
                    fmt_num(m.warmup_sent as f64),
                    fmt_num(m.not_sent as f64),
                    fmt_num(m.achieved_send_rate_per_s),
                    fmt_num(m.max_sender_lag_us),
                    fmt_num(m.received as f64),
                    fmt_num(m.expected as f64),
                    m.lost,
                    m.duplicates,
                    m.out_of_order,
                    m.dropped_notices
                );
            }
            Some(Metrics::Flow(m)) => {
                let _ = writeln!(md, "| metric | value |\n| --- | ---: |");
                for (k, v) in [
                    ("published", m.published as f64),
                    ("publish msgs/s", m.publish_msgs_per_s),
                    ("publish MB/s", m.publish_mb_per_s),
                    ("deliveries (all subscribers)", m.deliveries as f64),
                    ("deliveries/s", m.deliveries_per_s),
                    ("delivered MB/s", m.delivery_mb_per_s),
                    ("slowest subscriber msgs/s", m.min_subscriber_msgs_per_s),
                    ("mean subscriber msgs/s", m.mean_subscriber_msgs_per_s),
                    ("lost", m.lost as f64),
                    ("duplicates", m.duplicates as f64),
                    ("out of order", m.out_of_order as f64),
                    ("shed notices", m.dropped_notices as f64),
                ] {
                    let _ = writeln!(md, "| {k} | {} |", fmt_num(v));
                }
                let _ = writeln!(md, "\n| subscriber | received | lost | msgs/s | MB/s |\n| ---: | ---: | ---: | ---: | ---: |");
                for s in &m.subscribers {
                    let _ = writeln!(
                        md,
                        "| {} | {} | {} | {} | {} |",
                        s.index,
                        fmt_num(s.received as f64),
                        fmt_num(s.lost as f64),
                        fmt_num(s.msgs_per_s),
                        fmt_num(s.mb_per_s)
                    );
                }
                md.push('\n');
            }
            Some(Metrics::Conns(m)) => {
                let _ = writeln!(md, "| metric | value |\n| --- | ---: |");
                let opt =
                    |v: Option<u64>| v.map(|b| fmt_num(b as f64)).unwrap_or_else(|| "n/a".into());
                let rows: Vec<(&str, String)> = vec![
                    ("requested", fmt_num(m.requested as f64)),
                    (
                        "capped to (RLIMIT_NOFILE)",
                        m.capped_to
                            .map(|c| fmt_num(c as f64))
                            .unwrap_or_else(|| "no cap".into()),
                    ),
                    ("established", fmt_num(m.established as f64)),
                    ("failed", fmt_num(m.failed as f64)),
                    ("handshakes/s", fmt_num(m.handshakes_per_s)),
                    (
                        "closed by server while idle",
                        fmt_num(m.closed_during_hold as f64),
                    ),
                    ("server RSS before", opt(m.rss_before_bytes)),
                    ("server RSS with connections", opt(m.rss_after_bytes)),
                    ("server RSS after closing", opt(m.rss_after_close_bytes)),
                    (
                        "server bytes/connection",
                        m.bytes_per_conn
                            .map(fmt_num)
                            .unwrap_or_else(|| "n/a".into()),
                    ),
                    ("source addresses", m.source_addresses.join(", ")),
                ];
                for (k, v) in rows {
                    let _ = writeln!(md, "| {k} | {v} |");
                }
                for (k, v) in &m.failures {
                    let _ = writeln!(md, "| failure: {k} | {v} |");
                }
                md.push('\n');
            }
            Some(Metrics::Durable(m)) => {
                let _ = writeln!(md, "| metric | value |\n| --- | ---: |");
                for (k, v) in [
                    ("acked", m.acked as f64),
                    ("failed", m.failed as f64),
                    ("acked publishes/s", m.acked_per_s),
                    ("acked MB/s", m.mb_per_s),
                    ("in flight", m.inflight as f64),
                ] {
                    let _ = writeln!(md, "| {k} | {} |", fmt_num(v));
                }
                let _ = writeln!(md, "| storage | {} |", m.storage);
                let _ = writeln!(
                    md,
                    "\n| ack latency µs | p50 | p90 | p99 | p99.9 | p99.99 | max | samples |"
                );
                let _ = writeln!(
                    md,
                    "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
                );
                lat_row(&mut md, "publish to ack", &m.ack_latency);
                md.push('\n');
            }
            None => {}
        }
        if let Some(c) = &self.cpu {
            let server = c
                .server
                .map(|s| format!("server {s:.2}, "))
                .unwrap_or_default();
            let _ = writeln!(
                md,
                "CPU (cores, average over the run, of {}): harness {:.2}, {server}other processes \
                 {:.2}, interrupts {:.2}, steal {:.2}.\n",
                c.machine_cores, c.harness, c.other, c.interrupts, c.steal
            );
        }
        if let (Some(b), Some(a)) = (self.server_rss_before_bytes, self.server_rss_after_bytes) {
            let _ = writeln!(
                md,
                "Server RSS {} -> {} bytes.\n",
                fmt_num(b as f64),
                fmt_num(a as f64)
            );
        }
        for n in &self.notes {
            let _ = writeln!(md, "- {n}");
        }
        if !self.notes.is_empty() {
            md.push('\n');
        }
        md
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_readable() {
        assert_eq!(fmt_num(1234567.0), "1,234,567");
        assert_eq!(fmt_num(12.345), "12.3");
        assert_eq!(fmt_num(1.2345), "1.23");
        assert_eq!(fmt_num(-1500.0), "-1,500");
        assert_eq!(fmt_num(f64::NAN), "–");
    }

    #[test]
    fn results_round_trip_through_json() {
        let r = RunResult {
            scenario: "latency".into(),
            label: "latency-1000".into(),
            target: "nats".into(),
            target_url: "nats://127.0.0.1:4222".into(),
            started_unix_ms: 1,
            elapsed_s: 2.0,
            status: Status::Ok,
            notes: vec!["n".into()],
            params: BTreeMap::from([("rate".to_string(), serde_json::json!(1000))]),
            metrics: Some(Metrics::Latency(Box::new(LatencyMetrics {
                rate_per_s: 1000,
                ..Default::default()
            }))),
            server_rss_before_bytes: None,
            server_rss_after_bytes: None,
            cpu: None,
        };
        let json = serde_json::to_string(&r).unwrap();
        let back: RunResult = serde_json::from_str(&json).unwrap();
        assert_eq!(back.label, r.label);
        assert!(matches!(back.metrics, Some(Metrics::Latency(ref m)) if m.rate_per_s == 1000));
        assert!(r.to_markdown().contains("from intended send"));
    }
}
