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
    Spectral(Box<SpectralMetrics>),
    Filters(FiltersMetrics),
    Params(ParamsMetrics),
    Delta(DeltaMetrics),
    Types(TypesMetrics),
    Tenants(Box<TenantsMetrics>),
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
    /// Acked publishes each publisher kept outstanding.
    pub inflight: usize,
    /// Publishers, each on its own connection (runs before this field existed had one).
    #[serde(default = "one")]
    pub publishers: usize,
    pub sent: u64,
    pub acked: u64,
    pub failed: u64,
    pub secs: f64,
    pub acked_per_s: f64,
    pub mb_per_s: f64,
    pub ack_latency: LatencySummary,
}

fn one() -> usize {
    1
}

/// `spectral` (US-05): agents' spectral pulses under a background load.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SpectralMetrics {
    pub agents: usize,
    pub interval_ms: f64,
    /// All agents together.
    pub rate_per_s: u64,
    pub eigenvalues: usize,
    pub scheduled: u64,
    pub sent: u64,
    pub not_sent: u64,
    pub warmup_sent: u64,
    pub max_sender_lag_us: f64,
    pub send_lateness: LatencySummary,
    /// Receipt minus intended send time, over every spectral subscriber.
    pub from_intended: LatencySummary,
    pub from_send: LatencySummary,
    pub subscribers: usize,
    pub expected: u64,
    pub received: u64,
    pub lost: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    pub dropped_notices: u64,
    /// Spectral pulses whose metadata was missing or differed from what the agent sent.
    pub spectral_mismatches: u64,
    pub curve_from_intended: Vec<(f64, f64)>,
    pub curve_from_send: Vec<(f64, f64)>,
    #[serde(default)]
    pub timeline: Vec<crate::stats::Window>,
    /// The background load: configured rate (0 = flat out; None = no background).
    pub background_rate_per_s: Option<u64>,
    pub background_published: u64,
    pub background_publish_msgs_per_s: f64,
    pub background_received: u64,
    pub background_deliveries_per_s: f64,
    pub background_lost: u64,
    pub background_dropped_notices: u64,
}

/// `filters`: the same subscriptions filtered and unfiltered.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FiltersMetrics {
    pub rate_per_s: u64,
    pub subscriptions: usize,
    pub connections: usize,
    /// `filtered`, then `unfiltered`.
    pub phases: Vec<FilterPhase>,
    /// The server's cores over one idle second before the phases.
    pub server_idle_cores: Option<f64>,
    /// Server CPU per published pulse net of idle, filtered / unfiltered.
    pub filtered_cpu_per_pulse_ratio: Option<f64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FilterPhase {
    pub name: String,
    /// The filter of the middle subscription (empty when unfiltered).
    pub example_filter: String,
    pub published: u64,
    pub publish_secs: f64,
    /// What the filters admit, summed over subscriptions.
    pub expected_deliveries: u64,
    /// Distinct pulses received, summed over subscriptions.
    pub deliveries: u64,
    /// From the first receipt on any connection to the last.
    pub delivery_secs: f64,
    pub deliveries_per_s: f64,
    /// Publish-to-deliver, from the intended send time, every delivery after the warm-up.
    pub latency: LatencySummary,
    pub curve: Vec<(f64, f64)>,
    pub server_cores: Option<f64>,
    pub harness_cores: Option<f64>,
    pub server_cpu_us_per_pulse: Option<f64>,
    pub server_cpu_us_per_delivery: Option<f64>,
    /// The same net of the server's idle CPU.
    pub server_net_cpu_us_per_pulse: Option<f64>,
    /// Subscriptions that did not get exactly what their filter admits (a failure).
    pub subscriptions_wrong: u64,
    /// Admitted pulses not received (those announced as shed included).
    pub missing: u64,
    pub unexplained_missing: u64,
    /// Pulses received that the filter refuses (or never published): a failure.
    pub extra: u64,
    pub duplicates: u64,
    pub dropped_notices: u64,
}

impl FiltersMetrics {
    fn phase(&self, name: &str) -> Option<&FilterPhase> {
        self.phases.iter().find(|p| p.name == name)
    }

    /// Whether every subscription got exactly what its filter admits (pulses the server
    /// announced as shed excepted).
    pub fn exact(&self) -> bool {
        self.phases.iter().all(|p| p.subscriptions_wrong == 0)
    }
}

/// `params`: one parameter set, delivered to every session of a reality, K times.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ParamsMetrics {
    pub requested_sessions: u64,
    /// Sessions that connected and subscribed.
    pub sessions: u64,
    pub sessions_failed: u64,
    pub open_secs: f64,
    pub name: String,
    pub patterns: Vec<String>,
    pub source_addresses: Vec<String>,
    pub repeats: Vec<ParamRepeat>,
    /// Over repeats (K small: p50 is the median repeat).
    pub set_to_last_p50_ms: Option<f64>,
    pub set_to_last_max_ms: Option<f64>,
    pub set_to_median_p50_ms: Option<f64>,
    pub set_to_median_max_ms: Option<f64>,
    pub ack_p50_us: Option<f64>,
    /// Sessions short of each version, summed over repeats, plus wrong or repeated receipts.
    pub failures: u64,
    /// Frames other than the parameter's pulses (there should be none).
    pub other_frames: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ParamRepeat {
    pub version: u64,
    pub number: f64,
    /// Sessions that received this version.
    pub delivered: u64,
    pub missing: u64,
    pub wrong_version: u64,
    pub wrong_value: u64,
    pub duplicates: u64,
    /// From the controller's write of the set to its PubAck.
    pub ack_us: Option<f64>,
    pub set_to_first_ms: Option<f64>,
    pub set_to_median_ms: Option<f64>,
    pub set_to_last_ms: Option<f64>,
}

impl ParamsMetrics {
    /// Fills the aggregates from `repeats`.
    pub fn summarize(&mut self) {
        fn p50_max(mut v: Vec<f64>) -> (Option<f64>, Option<f64>) {
            v.sort_by(f64::total_cmp);
            (
                v.get(v.len().saturating_sub(1) / 2).copied(),
                v.last().copied(),
            )
        }
        let pick = |f: fn(&ParamRepeat) -> Option<f64>| -> Vec<f64> {
            self.repeats.iter().filter_map(f).collect()
        };
        (self.set_to_last_p50_ms, self.set_to_last_max_ms) = p50_max(pick(|r| r.set_to_last_ms));
        (self.set_to_median_p50_ms, self.set_to_median_max_ms) =
            p50_max(pick(|r| r.set_to_median_ms));
        self.ack_p50_us = p50_max(pick(|r| r.ack_us)).0;
        self.failures = self
            .repeats
            .iter()
            .map(|r| r.missing + r.wrong_version + r.wrong_value + r.duplicates)
            .sum();
    }
}

/// `delta`: wire bytes of a delta-only topic against the same states published whole.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DeltaMetrics {
    pub steps: u64,
    pub state_bytes: usize,
    pub changed_bytes: usize,
    pub subscribers_per_topic: usize,
    pub variants: Vec<DeltaVariant>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DeltaVariant {
    /// `scattered` or `contiguous`.
    pub change: String,
    pub delta_topic: String,
    pub full_topic: String,
    pub publish_secs: f64,
    pub producer_sha256: String,
    pub delta_wire_bytes_per_sub: f64,
    pub full_wire_bytes_per_sub: f64,
    /// Delta / full, mean wire bytes per subscriber.
    pub wire_ratio: f64,
    /// Every subscriber rebuilt the producer's final state, with no error and no loss.
    pub all_match: bool,
    pub subscribers_by_shard: BTreeMap<u32, usize>,
    pub delta_subs: Vec<DeltaSub>,
    pub full_subs: Vec<DeltaSub>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DeltaSub {
    pub index: usize,
    /// A subscriber of the delta-only topic (else of the plain one).
    pub delta: bool,
    pub shard: u32,
    pub pulses: u64,
    pub keyframes: u64,
    pub deltas: u64,
    /// Everything the connection read: frames with their length prefixes.
    pub wire_bytes: u64,
    pub payload_bytes: u64,
    pub dropped_notices: u64,
    /// Pulses neither received nor announced as shed.
    pub lost: u64,
    /// Refused deltas, CRC mismatches, wrong bases, error frames.
    pub errors: u64,
    pub first_error: Option<String>,
    pub final_sha256: String,
    pub matches: bool,
}

impl DeltaMetrics {
    pub fn all_match(&self) -> bool {
        !self.variants.is_empty() && self.variants.iter().all(|v| v.all_match)
    }
}

/// A figure over rounds: its median, range and every value.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub values: Vec<f64>,
}

impl Spread {
    /// `None` for no values. The median of an even count is the mean of the middle two.
    pub fn of(values: Vec<f64>) -> Option<Spread> {
        let mut sorted = values.clone();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let median = match n {
            0 => return None,
            _ if n % 2 == 1 => sorted[n / 2],
            _ => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
        };
        Some(Spread {
            median,
            min: sorted[0],
            max: sorted[n - 1],
            values,
        })
    }
}

/// `types`: what SAM type enforcement costs per pulse: the same payloads from a plain session,
/// a relaxed operator and a strict one, alternating over rounds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TypesMetrics {
    /// Pulses per second of each phase; 0 = as fast as the bus takes them.
    pub rate_per_s: u64,
    /// Of the encoded message every pulse carries.
    pub payload_bytes: usize,
    pub message_type: String,
    pub samples_per_payload: usize,
    /// Of the strict manifest's descriptor set.
    pub descriptor_set_bytes: usize,
    pub rounds: u32,
    pub phase_secs: f64,
    /// The server's cores over one idle second before the phases.
    pub server_idle_cores: Option<f64>,
    /// Where the server's CPU time was read: `schedstat` (its threads, in ns) or `ticks`
    /// (/proc/PID/stat, 10 ms).
    pub server_cpu_source: String,
    /// In the order they ran.
    pub phases: Vec<TypesPhase>,
    /// Per mode, over rounds.
    pub modes: Vec<TypesModeSummary>,
    /// Relaxed and strict: net server CPU ns per pulse minus plain's in the same round.
    pub costs: Vec<TypesCost>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TypesPhase {
    pub round: u32,
    /// 1, 2 or 3: where in its round the phase ran.
    pub position: u32,
    /// `plain`, `relaxed` or `strict`.
    pub mode: String,
    /// How the bus answered the three probes (wrong type URL, undeclared field, valid).
    pub probes: String,
    pub published: u64,
    pub publish_secs: f64,
    pub publish_msgs_per_s: f64,
    /// How far behind its open-loop schedule the sender got at worst.
    pub max_sender_lag_us: f64,
    /// Distinct pulses of this phase received.
    pub delivered: u64,
    pub lost: u64,
    pub duplicates: u64,
    /// Received pulses of another phase.
    pub unexpected: u64,
    /// Received payloads that are not a harness Reading.
    pub foreign: u64,
    /// Pulses the server said it shed (they count as lost too).
    pub dropped_notices: u64,
    /// Measured publishes the bus refused (Error frames on the publisher).
    pub refused: u64,
    /// The last refusal's error, when there was one.
    pub last_refusal: Option<String>,
    pub subscriber_error: Option<String>,
    /// From the first receipt to the last.
    pub delivery_secs: f64,
    pub deliveries_per_s: f64,
    pub server_cores: Option<f64>,
    pub harness_cores: Option<f64>,
    pub other_cores: Option<f64>,
    /// Server CPU from just before the first publish to the end of the drain, per published
    /// pulse.
    pub server_cpu_ns_per_pulse: Option<f64>,
    /// The same net of the server's idle CPU over the window.
    pub server_net_cpu_ns_per_pulse: Option<f64>,
}

impl TypesPhase {
    /// Every pulse arrived exactly once, none refused, nothing else arrived.
    pub fn complete(&self) -> bool {
        self.published > 0
            && self.delivered == self.published
            && self.lost + self.duplicates + self.unexpected + self.foreign + self.refused == 0
            && self.subscriber_error.is_none()
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TypesModeSummary {
    pub mode: String,
    pub deliveries_per_s: Option<Spread>,
    pub server_cpu_ns_per_pulse: Option<Spread>,
    pub server_net_cpu_ns_per_pulse: Option<Spread>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TypesCost {
    pub mode: String,
    /// Per round: this mode's net server CPU ns per pulse minus plain's.
    pub ns_per_pulse_over_plain: Spread,
}

impl TypesMetrics {
    pub fn complete(&self) -> bool {
        !self.phases.is_empty() && self.phases.iter().all(TypesPhase::complete)
    }

    fn mode(&self, name: &str) -> Option<&TypesModeSummary> {
        self.modes.iter().find(|m| m.mode == name)
    }

    fn cost(&self, name: &str) -> Option<&Spread> {
        self.costs
            .iter()
            .find(|c| c.mode == name)
            .map(|c| &c.ns_per_pulse_over_plain)
    }
}

/// `tenants`: tenant B's open-loop latency probe on every shard while tenant A is idle and
/// while it floods, phase by phase.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TenantsMetrics {
    pub shards: u32,
    /// B's probe rate on each shard.
    pub probe_rate_per_s: u64,
    pub probe_payload_bytes: usize,
    pub flood_payload_bytes: usize,
    /// A's connections (churn: connection slots) per shard.
    pub flood_connections: usize,
    pub warmup_secs: f64,
    pub phase_secs: f64,
    /// The start of every phase that is not measured.
    pub settle_secs: f64,
    /// The target: a flood phase's p99 over the first quiet phase's, on each shard.
    pub target_ratio: f64,
    /// `--fail-over`: the ratio past which the run fails.
    pub fail_over: Option<f64>,
    /// Nice value of the harness's flooding threads.
    pub flood_nice: i32,
    pub probes: Vec<ProbeShard>,
    /// The realities the history flood read, with their owner and size.
    pub history_realities: Vec<HistoryReality>,
    pub policy_reality: Option<String>,
    /// In the order they ran.
    pub phases: Vec<TenantsPhase>,
}

/// B's probe on one shard over the whole run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ProbeShard {
    pub shard: u32,
    pub reality: String,
    pub scheduled: u64,
    pub sent: u64,
    pub not_sent: u64,
    pub received: u64,
    pub lost: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    pub dropped_notices: u64,
    pub max_sender_lag_us: f64,
    pub send_lateness: LatencySummary,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct HistoryReality {
    pub name: String,
    pub owner: u32,
    /// What one whole read returned before the run.
    pub pulses: u64,
    /// The shards whose readers read it.
    pub read_by: Vec<u32>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TenantsPhase {
    pub name: String,
    /// `publish`, `history`, `policy` or `churn`; `None` while A is idle.
    pub flood: Option<String>,
    /// Connecting A's flood connections at the start of the phase.
    pub setup_ms: Option<f64>,
    /// From the end of the setup to the end of the flood.
    pub flood_secs: Option<f64>,
    /// A's connections that failed or ended early, handshakes that failed, by kind.
    pub flood_failures: BTreeMap<String, u64>,
    /// Over the whole phase (settling included).
    pub cpu: Option<crate::sys::CpuUse>,
    pub shards: Vec<TenantsShardPhase>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TenantsShardPhase {
    pub shard: u32,
    /// B's latency from the intended send, pulses intended in this phase after its settling.
    pub latency: LatencySummary,
    pub curve: Vec<(f64, f64)>,
    /// p99 over the first quiet phase's p99 on this shard.
    pub p99_ratio: Option<f64>,
    /// Flood phases: whether the ratio is within the target.
    pub within_target: Option<bool>,
    pub flood: Option<FloodShard>,
}

/// What A's flood did on one shard in one phase; rates over the flood's active time.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FloodShard {
    /// Publishes written (publish), reads answered (history), publishes answered (policy),
    /// handshakes completed on this shard (churn).
    pub ops: u64,
    pub ops_per_s: f64,
    /// Pulses delivered to A's subscriber (publish), read (history), accepted (policy).
    pub pulses: u64,
    pub pulses_per_s: f64,
    /// Pulses the bus shed for A's subscriber.
    pub shed: u64,
    /// Refusals by error code (a refusal of publishes without ack counted for the publishes it
    /// stands for).
    pub refused: BTreeMap<String, u64>,
}

impl TenantsMetrics {
    /// The worst (largest) p99 ratio over shards of each flood phase, in order.
    pub fn worst_ratios(&self) -> Vec<(&str, Option<f64>)> {
        self.phases
            .iter()
            .filter_map(|p| {
                let kind = p.flood.as_deref()?;
                let worst = p
                    .shards
                    .iter()
                    .filter_map(|s| s.p99_ratio)
                    .fold(None, |acc: Option<f64>, r| {
                        Some(acc.map_or(r, |a| a.max(r)))
                    });
                Some((kind, worst))
            })
            .collect()
    }

    /// Every flood phase on every shard within `limit` of the quiet p99 (a phase without a
    /// ratio is not within it).
    pub fn all_within(&self, limit: f64) -> bool {
        self.worst_ratios()
            .iter()
            .all(|(_, r)| r.is_some_and(|r| r <= limit))
    }

    pub fn probe_lost(&self) -> u64 {
        self.probes.iter().map(|p| p.lost).sum()
    }
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
            Metrics::Spectral(m) => vec![
                h("p50 µs (from intended send)", m.from_intended.p50_us, Lower),
                h("p99 µs (from intended send)", m.from_intended.p99_us, Lower),
                h(
                    "p99.9 µs (from intended send)",
                    m.from_intended.p999_us,
                    Lower,
                ),
                h("max µs (from intended send)", m.from_intended.max_us, Lower),
                h("lost spectral pulses", m.lost as f64, Lower),
                h(
                    "spectral metadata mismatches",
                    m.spectral_mismatches as f64,
                    Lower,
                ),
                h(
                    "background deliveries/s",
                    m.background_deliveries_per_s,
                    Higher,
                ),
            ],
            Metrics::Filters(m) => {
                let mut v = Vec::new();
                if let Some(p) = m.phase("filtered") {
                    v.push(h("filtered deliveries/s", p.deliveries_per_s, Higher));
                    v.push(h("filtered p99 µs", p.latency.p99_us, Lower));
                    if let Some(c) = p.server_net_cpu_us_per_pulse {
                        v.push(h("filtered server CPU µs/pulse (net of idle)", c, Lower));
                    }
                    v.push(h(
                        "filtered subscriptions wrong",
                        p.subscriptions_wrong as f64,
                        Lower,
                    ));
                }
                if let Some(p) = m.phase("unfiltered") {
                    v.push(h("unfiltered deliveries/s", p.deliveries_per_s, Higher));
                    v.push(h("unfiltered p99 µs", p.latency.p99_us, Lower));
                    if let Some(c) = p.server_net_cpu_us_per_pulse {
                        v.push(h("unfiltered server CPU µs/pulse (net of idle)", c, Lower));
                    }
                }
                v
            }
            Metrics::Params(m) => {
                let mut v = Vec::new();
                for (name, x) in [
                    ("set→last delivery p50 ms", m.set_to_last_p50_ms),
                    ("set→last delivery max ms", m.set_to_last_max_ms),
                    ("set→median delivery p50 ms", m.set_to_median_p50_ms),
                    ("set→median delivery max ms", m.set_to_median_max_ms),
                ] {
                    if let Some(x) = x {
                        v.push(h(name, x, Lower));
                    }
                }
                v.push(h("parameter delivery failures", m.failures as f64, Lower));
                v
            }
            Metrics::Delta(m) => {
                let mut v = Vec::new();
                for x in &m.variants {
                    let (ratio, bytes): (&'static str, &'static str) = match x.change.as_str() {
                        "scattered" => (
                            "scattered: delta/full wire bytes",
                            "scattered: delta wire bytes/subscriber",
                        ),
                        _ => (
                            "contiguous: delta/full wire bytes",
                            "contiguous: delta wire bytes/subscriber",
                        ),
                    };
                    v.push(h(ratio, x.wire_ratio, Lower));
                    v.push(h(bytes, x.delta_wire_bytes_per_sub, Lower));
                }
                v
            }
            Metrics::Types(m) => {
                let mut v = Vec::new();
                for (mode, rate, cpu) in [
                    (
                        "plain",
                        "plain deliveries/s",
                        "plain server CPU ns/pulse (net of idle)",
                    ),
                    (
                        "relaxed",
                        "relaxed deliveries/s",
                        "relaxed server CPU ns/pulse (net of idle)",
                    ),
                    (
                        "strict",
                        "strict deliveries/s",
                        "strict server CPU ns/pulse (net of idle)",
                    ),
                ] {
                    if let Some(s) = m.mode(mode) {
                        if let Some(d) = &s.deliveries_per_s {
                            v.push(h(rate, d.median, Higher));
                        }
                        if let Some(c) = &s.server_net_cpu_ns_per_pulse {
                            v.push(h(cpu, c.median, Lower));
                        }
                    }
                }
                if let Some(c) = m.cost("relaxed") {
                    v.push(h("relaxed − plain server CPU ns/pulse", c.median, Lower));
                }
                if let Some(c) = m.cost("strict") {
                    v.push(h("strict − plain server CPU ns/pulse", c.median, Lower));
                }
                v
            }
            Metrics::Tenants(m) => {
                let mut v = Vec::new();
                if let Some(q) = m.phases.first() {
                    let worst = q
                        .shards
                        .iter()
                        .map(|s| s.latency.p99_us)
                        .fold(0.0, f64::max);
                    v.push(h("B p99 µs, A idle (worst shard)", worst, Lower));
                }
                for (kind, ratio) in m.worst_ratios() {
                    let name = match kind {
                        "publish" => "B p99 / quiet p99, A publish flood (worst shard)",
                        "history" => "B p99 / quiet p99, A history flood (worst shard)",
                        "policy" => "B p99 / quiet p99, A policy flood (worst shard)",
                        _ => "B p99 / quiet p99, A connection churn (worst shard)",
                    };
                    if let Some(r) = ratio {
                        v.push(h(name, r, Lower));
                    }
                }
                v.push(h("B probe pulses lost", m.probe_lost() as f64, Lower));
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
            Some(Metrics::Spectral(m)) => spectral_markdown(&mut md, m),
            Some(Metrics::Filters(m)) => filters_markdown(&mut md, m),
            Some(Metrics::Params(m)) => params_markdown(&mut md, m),
            Some(Metrics::Delta(m)) => delta_markdown(&mut md, m),
            Some(Metrics::Types(m)) => types_markdown(&mut md, m),
            Some(Metrics::Tenants(m)) => tenants_markdown(&mut md, m),
            Some(Metrics::Durable(m)) => {
                let _ = writeln!(md, "| metric | value |\n| --- | ---: |");
                for (k, v) in [
                    ("acked", m.acked as f64),
                    ("failed", m.failed as f64),
                    ("acked publishes/s", m.acked_per_s),
                    ("acked MB/s", m.mb_per_s),
                    ("publishers", m.publishers as f64),
                    ("in flight per publisher", m.inflight as f64),
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

fn lat_header(md: &mut String, what: &str) {
    let _ = writeln!(
        md,
        "| {what} | p50 | p90 | p99 | p99.9 | p99.99 | max | samples |"
    );
    let _ = writeln!(
        md,
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
}

fn spectral_markdown(md: &mut String, m: &SpectralMetrics) {
    lat_header(md, "spectral latency µs");
    lat_row(md, "from intended send", &m.from_intended);
    lat_row(md, "from actual send", &m.from_send);
    lat_row(md, "sender lateness", &m.send_lateness);
    let _ = writeln!(
        md,
        "\n{} agents every {} ms ({}/s): scheduled {}, sent {} ({} in warm-up, {} not sent), \
         worst sender lag {} µs; {} subscribers received {} of {} expected, lost {}, duplicates \
         {}, out of order {}, shed notices {}, spectral metadata mismatches {}\n",
        m.agents,
        fmt_num(m.interval_ms),
        fmt_num(m.rate_per_s as f64),
        fmt_num(m.scheduled as f64),
        fmt_num(m.sent as f64),
        fmt_num(m.warmup_sent as f64),
        fmt_num(m.not_sent as f64),
        fmt_num(m.max_sender_lag_us),
        m.subscribers,
        fmt_num(m.received as f64),
        fmt_num(m.expected as f64),
        m.lost,
        m.duplicates,
        m.out_of_order,
        m.dropped_notices,
        m.spectral_mismatches
    );
    match m.background_rate_per_s {
        None => {
            let _ = writeln!(md, "No background load.\n");
        }
        Some(rate) => {
            let _ = writeln!(
                md,
                "Background ({}): published {} at {}/s, delivered {} at {}/s, lost {}, shed \
                 notices {}\n",
                if rate == 0 {
                    "flat out".to_string()
                } else {
                    format!("{}/s asked", fmt_num(rate as f64))
                },
                fmt_num(m.background_published as f64),
                fmt_num(m.background_publish_msgs_per_s),
                fmt_num(m.background_received as f64),
                fmt_num(m.background_deliveries_per_s),
                m.background_lost,
                m.background_dropped_notices
            );
        }
    }
}

fn delta_markdown(md: &mut String, m: &DeltaMetrics) {
    let _ = writeln!(
        md,
        "{} steps of a {}-byte state, {} bytes changed per step; {} subscriber connections per \
         topic.\n",
        fmt_num(m.steps as f64),
        m.state_bytes,
        m.changed_bytes,
        m.subscribers_per_topic
    );
    let _ = writeln!(
        md,
        "| change | delta wire B/subscriber | full wire B/subscriber | ratio | delta B/step | full B/step | keyframes | deltas | errors | lost | state SHA-256 matches |"
    );
    let _ = writeln!(
        md,
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
    );
    for v in &m.variants {
        let steps = m.steps.max(1) as f64;
        let all = || v.delta_subs.iter().chain(&v.full_subs);
        let _ = writeln!(
            md,
            "| {} | {} | {} | {:.4} | {} | {} | {} | {} | {} | {} | {} |",
            v.change,
            fmt_num(v.delta_wire_bytes_per_sub),
            fmt_num(v.full_wire_bytes_per_sub),
            v.wire_ratio,
            fmt_num(v.delta_wire_bytes_per_sub / steps),
            fmt_num(v.full_wire_bytes_per_sub / steps),
            v.delta_subs.iter().map(|s| s.keyframes).sum::<u64>(),
            v.delta_subs.iter().map(|s| s.deltas).sum::<u64>(),
            all().map(|s| s.errors).sum::<u64>(),
            all().map(|s| s.lost).sum::<u64>(),
            if v.all_match {
                format!("all {} (`{}…`)", all().count(), &v.producer_sha256[..16])
            } else {
                format!(
                    "NO: {} of {}",
                    all().filter(|s| !s.matches).count(),
                    all().count()
                )
            }
        );
    }
    md.push('\n');
    let _ = writeln!(
        md,
        "| change | topic | subscriber | shard | pulses | keyframes | deltas | wire bytes | payload bytes | matches |"
    );
    let _ = writeln!(
        md,
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
    );
    for v in &m.variants {
        for s in v.delta_subs.iter().chain(&v.full_subs) {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                v.change,
                if s.delta {
                    &v.delta_topic
                } else {
                    &v.full_topic
                },
                s.index,
                s.shard,
                fmt_num(s.pulses as f64),
                fmt_num(s.keyframes as f64),
                fmt_num(s.deltas as f64),
                fmt_num(s.wire_bytes as f64),
                fmt_num(s.payload_bytes as f64),
                if s.matches { "yes" } else { "NO" }
            );
        }
    }
    md.push('\n');
}

fn params_markdown(md: &mut String, m: &ParamsMetrics) {
    let opt = |v: Option<f64>| v.map(fmt_num).unwrap_or_else(|| "n/a".into());
    let _ = writeln!(
        md,
        "{} of {} sessions subscribed (in {:.1} s, from {}), patterns {}; parameter `{}`.\n",
        fmt_num(m.sessions as f64),
        fmt_num(m.requested_sessions as f64),
        m.open_secs,
        if m.source_addresses.is_empty() {
            "the default source address".to_string()
        } else {
            m.source_addresses.join(", ")
        },
        m.patterns
            .iter()
            .map(|p| format!("`{p}`"))
            .collect::<Vec<_>>()
            .join(" "),
        m.name
    );
    let _ = writeln!(
        md,
        "| version | delivered | missing | wrong version | wrong value | duplicates | set→ack µs | set→first ms | set→median ms | set→last ms |"
    );
    let _ = writeln!(
        md,
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for r in &m.repeats {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.version,
            fmt_num(r.delivered as f64),
            r.missing,
            r.wrong_version,
            r.wrong_value,
            r.duplicates,
            opt(r.ack_us),
            opt(r.set_to_first_ms),
            opt(r.set_to_median_ms),
            opt(r.set_to_last_ms)
        );
    }
    let _ =
        writeln!(
        md,
        "\nOver {} sets: set→last delivery p50 {} ms, max {} ms; set→median delivery p50 {} ms, \
         max {} ms; set→ack p50 {} µs. Every session got every version exactly once: {}.\n",
        m.repeats.len(),
        opt(m.set_to_last_p50_ms),
        opt(m.set_to_last_max_ms),
        opt(m.set_to_median_p50_ms),
        opt(m.set_to_median_max_ms),
        opt(m.ack_p50_us),
        if m.failures == 0 { "yes" } else { "NO (see the notes)" }
    );
}

fn types_markdown(md: &mut String, m: &TypesMetrics) {
    let opt = |v: Option<f64>| v.map(fmt_num).unwrap_or_else(|| "n/a".into());
    let spread = |s: &Option<Spread>| match s {
        Some(s) => format!(
            "{} ({} – {})",
            fmt_num(s.median),
            fmt_num(s.min),
            fmt_num(s.max)
        ),
        None => "n/a".into(),
    };
    let _ =
        writeln!(
        md,
        "One publisher → one subscriber, `{}` payloads of {} bytes ({} packed doubles, a string, \
         nested and repeated messages), {} per phase, {} rounds of plain / relaxed / strict \
         (rotated each round); strict descriptor set {} bytes. Server CPU from {}.\n",
        m.message_type,
        fmt_num(m.payload_bytes as f64),
        m.samples_per_payload,
        if m.rate_per_s == 0 {
            format!("flat out for {} s", fmt_num(m.phase_secs))
        } else {
            format!("{}/s for {} s", fmt_num(m.rate_per_s as f64), fmt_num(m.phase_secs))
        },
        m.rounds,
        fmt_num(m.descriptor_set_bytes as f64),
        if m.server_cpu_source.is_empty() {
            "nowhere (no --server-pid)"
        } else {
            &m.server_cpu_source
        }
    );
    let _ = writeln!(
        md,
        "| round | mode | published | delivered | lost (shed) | refused | publish/s | deliveries/s | server cores | harness cores | other cores | server ns/pulse | net of idle | probes |"
    );
    let _ = writeln!(
        md,
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
    );
    for p in &m.phases {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} ({}) | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            p.round,
            p.mode,
            fmt_num(p.published as f64),
            fmt_num(p.delivered as f64),
            p.lost,
            p.dropped_notices,
            p.refused,
            fmt_num(p.publish_msgs_per_s),
            fmt_num(p.deliveries_per_s),
            opt(p.server_cores),
            opt(p.harness_cores),
            opt(p.other_cores),
            opt(p.server_cpu_ns_per_pulse),
            opt(p.server_net_cpu_ns_per_pulse),
            p.probes
        );
    }
    md.push('\n');
    let _ = writeln!(
        md,
        "| mode | deliveries/s, median (range) | server ns/pulse | net of idle |"
    );
    let _ = writeln!(md, "| --- | ---: | ---: | ---: |");
    for s in &m.modes {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} |",
            s.mode,
            spread(&s.deliveries_per_s),
            spread(&s.server_cpu_ns_per_pulse),
            spread(&s.server_net_cpu_ns_per_pulse)
        );
    }
    md.push('\n');
    if let Some(idle) = m.server_idle_cores {
        let _ = writeln!(
            md,
            "Server idle (one second before the phases): {idle:.3} cores.\n"
        );
    }
    for c in &m.costs {
        let s = &c.ns_per_pulse_over_plain;
        let _ = writeln!(
            md,
            "Cost of {} over plain: {} ns of server CPU per pulse, median over {} rounds (range \
             {} to {}; per round {}).\n",
            c.mode,
            fmt_num(s.median),
            s.values.len(),
            fmt_num(s.min),
            fmt_num(s.max),
            s.values
                .iter()
                .map(|v| fmt_num(*v))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let _ = writeln!(
        md,
        "Every pulse delivered exactly once, none refused: {}.\n",
        if m.complete() {
            "yes, in every phase"
        } else {
            "NO (see the notes)"
        }
    );
}

fn tenants_markdown(md: &mut String, m: &TenantsMetrics) {
    let _ = writeln!(
        md,
        "Tenant B: an open-loop probe of {}/s on each of {} shards ({}-byte pulses; publisher, \
         subscriber and reality all on the shard), latency from the intended send. Tenant A \
         floods from {} connections per shard ({}-byte pulses{}). {} s warm-up, then phases of \
         {} s, the first {} s of each not measured.\n",
        fmt_num(m.probe_rate_per_s as f64),
        m.shards,
        m.probe_payload_bytes,
        m.flood_connections,
        m.flood_payload_bytes,
        if m.flood_nice != 0 {
            format!("; flooding threads at nice {}", m.flood_nice)
        } else {
            String::new()
        },
        fmt_num(m.warmup_secs),
        fmt_num(m.phase_secs),
        fmt_num(m.settle_secs)
    );
    let _ = writeln!(
        md,
        "| phase | shard | B p50 µs | p99 | p99.9 | max | samples | p99 / quiet p99 | {}x | A's flood on this shard |",
        fmt_num(m.target_ratio)
    );
    let _ = writeln!(
        md,
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |"
    );
    for p in &m.phases {
        for s in &p.shards {
            let l = &s.latency;
            let verdict = match s.within_target {
                Some(true) => "PASS",
                Some(false) => "MISS",
                None if p.flood.is_some() => "n/a",
                None => "",
            };
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                p.name,
                s.shard,
                fmt_num(l.p50_us),
                fmt_num(l.p99_us),
                fmt_num(l.p999_us),
                fmt_num(l.max_us),
                fmt_num(l.count as f64),
                s.p99_ratio
                    .map(|r| format!("{r:.2}"))
                    .unwrap_or_else(|| "n/a".into()),
                verdict,
                match (&p.flood, &s.flood) {
                    (Some(kind), Some(f)) => flood_text(kind, f, p.flood_secs.unwrap_or(0.0)),
                    _ => "idle".to_string(),
                }
            );
        }
    }
    md.push('\n');
    let opt = |v: Option<f64>| v.map(fmt_num).unwrap_or_else(|| "n/a".into());
    let _ = writeln!(
        md,
        "| phase | server cores | harness cores | other cores | interrupts | steal | A's setup ms | A's flood s | A's failures |"
    );
    let _ = writeln!(
        md,
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
    );
    for p in &m.phases {
        let c = p.cpu;
        let failures = if p.flood_failures.is_empty() {
            if p.flood.is_some() { "none" } else { "" }.to_string()
        } else {
            p.flood_failures
                .iter()
                .map(|(k, n)| format!("{k} {}", fmt_num(*n as f64)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            p.name,
            opt(c.and_then(|c| c.server)),
            opt(c.map(|c| c.harness)),
            opt(c.map(|c| c.other)),
            opt(c.map(|c| c.interrupts)),
            opt(c.map(|c| c.steal)),
            opt(p.setup_ms),
            opt(p.flood_secs),
            failures
        );
    }
    md.push('\n');
    for p in &m.probes {
        let _ = writeln!(
            md,
            "B on shard {} (reality `{}`): scheduled {}, sent {} ({} not sent), received {}, lost \
             {}, duplicates {}, out of order {}, shed notices {}; worst sender lag {} µs, sender \
             lateness p99 {} µs.\n",
            p.shard,
            p.reality,
            fmt_num(p.scheduled as f64),
            fmt_num(p.sent as f64),
            fmt_num(p.not_sent as f64),
            fmt_num(p.received as f64),
            p.lost,
            p.duplicates,
            p.out_of_order,
            p.dropped_notices,
            fmt_num(p.max_sender_lag_us),
            fmt_num(p.send_lateness.p99_us)
        );
    }
    for h in &m.history_realities {
        let _ = writeln!(
            md,
            "History reality `{}` (owner shard {}): {} pulses per whole read; read by the \
             readers on shard(s) {}.\n",
            h.name,
            h.owner,
            fmt_num(h.pulses as f64),
            h.read_by
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if let Some(r) = &m.policy_reality {
        let _ = writeln!(md, "Policy flood reality: `{r}`.\n");
    }
    let misses: Vec<String> = m
        .phases
        .iter()
        .flat_map(|p| {
            p.shards
                .iter()
                .filter(|s| s.within_target != Some(true) && p.flood.is_some())
                .map(move |s| {
                    format!(
                        "{} on shard {} ({})",
                        p.name,
                        s.shard,
                        s.p99_ratio
                            .map(|r| format!("{r:.2}x"))
                            .unwrap_or_else(|| "no ratio".into())
                    )
                })
        })
        .collect();
    let _ = writeln!(
        md,
        "B's p99 under every flood within {}x of its quiet p99 on every shard: {}.\n",
        fmt_num(m.target_ratio),
        if misses.is_empty() {
            "yes".to_string()
        } else {
            format!("NO — {}", misses.join(", "))
        }
    );
}

/// A's flood on one shard in a few words, rates per second of its `secs` active.
fn flood_text(kind: &str, f: &FloodShard, secs: f64) -> String {
    let mut parts = vec![match kind {
        "publish" => format!(
            "{}/s written, {}/s delivered",
            fmt_num(f.ops_per_s),
            fmt_num(f.pulses_per_s)
        ),
        "history" => format!(
            "{}/s reads, {}/s pulses read",
            fmt_num(f.ops_per_s),
            fmt_num(f.pulses_per_s)
        ),
        "policy" => format!(
            "{}/s answered, {}/s accepted",
            fmt_num(f.ops_per_s),
            fmt_num(f.pulses_per_s)
        ),
        _ => format!("{}/s handshakes", fmt_num(f.ops_per_s)),
    }];
    if f.shed > 0 {
        parts.push(format!("{} shed", fmt_num(f.shed as f64)));
    }
    if !f.refused.is_empty() {
        // Per second, as the rates above: a refusal count is only readable beside them.
        let refused: Vec<String> = f
            .refused
            .iter()
            .map(|(code, n)| {
                if secs > 0.0 {
                    format!("{code} {}/s", fmt_num(*n as f64 / secs))
                } else {
                    format!("{code} {}", fmt_num(*n as f64))
                }
            })
            .collect();
        parts.push(format!("refused: {}", refused.join(", ")));
    }
    parts.join("; ")
}

fn filters_markdown(md: &mut String, m: &FiltersMetrics) {
    let opt = |v: Option<f64>| v.map(fmt_num).unwrap_or_else(|| "n/a".into());
    let _ = writeln!(
        md,
        "{} subscriptions over {} connections, {}/s pulses with random coherence; subscription \
         g filters `coherence >= g/{}`.\n",
        fmt_num(m.subscriptions as f64),
        m.connections,
        fmt_num(m.rate_per_s as f64),
        m.subscriptions
    );
    let _ = writeln!(
        md,
        "| phase | published | deliveries | expected | deliveries/s | server cores | server µs/pulse | net of idle | server µs/delivery | subscriptions wrong | missing (shed) | extra | duplicates |"
    );
    let _ = writeln!(
        md,
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for p in &m.phases {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} ({}) | {} | {} |",
            p.name,
            fmt_num(p.published as f64),
            fmt_num(p.deliveries as f64),
            fmt_num(p.expected_deliveries as f64),
            fmt_num(p.deliveries_per_s),
            opt(p.server_cores),
            opt(p.server_cpu_us_per_pulse),
            opt(p.server_net_cpu_us_per_pulse),
            opt(p.server_cpu_us_per_delivery),
            p.subscriptions_wrong,
            p.missing,
            p.dropped_notices,
            p.extra,
            p.duplicates
        );
    }
    md.push('\n');
    lat_header(md, "publish to deliver µs (from intended send)");
    for p in &m.phases {
        lat_row(md, &p.name, &p.latency);
    }
    md.push('\n');
    if let Some(idle) = m.server_idle_cores {
        let _ = writeln!(
            md,
            "Server idle (one second before the phases): {idle:.3} cores.\n"
        );
    }
    if let Some(r) = m.filtered_cpu_per_pulse_ratio {
        let _ = writeln!(
            md,
            "Server CPU per published pulse net of idle, filtered / unfiltered: {r:.2}.\n"
        );
    }
    let _ = writeln!(
        md,
        "Exact selection: {}.\n",
        if m.exact() {
            "every subscription received exactly the pulses its filter admits"
        } else {
            "FAILED (see the notes)"
        }
    );
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
    fn tenants_tables_have_rows_as_wide_as_their_headers() {
        let shard = |flood: bool| TenantsShardPhase {
            p99_ratio: Some(2.0),
            within_target: flood.then_some(false),
            flood: flood.then(|| FloodShard {
                ops: 10,
                ops_per_s: 2.0,
                refused: BTreeMap::from([("QUOTA_EXCEEDED".to_string(), 5)]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let m = TenantsMetrics {
            shards: 1,
            target_ratio: 1.5,
            probes: vec![ProbeShard::default()],
            phases: vec![
                TenantsPhase {
                    name: "quiet".into(),
                    cpu: Some(crate::sys::CpuUse::default()),
                    shards: vec![shard(false)],
                    ..Default::default()
                },
                TenantsPhase {
                    name: "publish".into(),
                    flood: Some("publish".into()),
                    flood_secs: Some(5.0),
                    flood_failures: BTreeMap::from([("publisher: BrokenPipe".to_string(), 1)]),
                    shards: vec![shard(true)],
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let mut md = String::new();
        tenants_markdown(&mut md, &m);
        let mut tables = 0;
        let mut width = None;
        for line in md.lines() {
            if !line.starts_with('|') {
                width = None;
                continue;
            }
            let cells = line.matches('|').count();
            match width {
                None => {
                    width = Some(cells);
                    tables += 1;
                }
                Some(w) => assert_eq!(cells, w, "row `{line}`"),
            }
        }
        assert_eq!(tables, 2);
        assert!(
            md.contains("| MISS |") && md.contains("QUOTA_EXCEEDED 1/s"),
            "{md}"
        );
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
