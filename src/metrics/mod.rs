//! Per-shard counters and the publish-to-deliver latency histogram.
//!
//! Each shard owns one [`ShardCounters`] and is its only writer: an increment is a relaxed load
//! and store (no locked read-modify-write, no cache line shared with another writer). Readers on
//! other threads (the admin endpoint, tests) load the values and sum them over shards, so a scrape
//! costs the data path nothing.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

macro_rules! counters {
    ($( $(#[doc = $doc:literal])* $name:ident => $exposed:literal ),* $(,)?) => {
        /// Counters of one shard. Written only by that shard.
        #[derive(Debug, Default)]
        #[repr(align(128))]
        pub struct ShardCounters {
            $( $(#[doc = $doc])* pub $name: Counter, )*
            /// Bumped by the shard's run loop every 20 ms while its reactor turns; the systemd
            /// watchdog and `/healthz` watch it advance. Not a metric.
            pub heartbeat: Counter,
            /// Time from the owner's timestamp on a pulse to the moment a subscriber's writer puts
            /// it into a socket batch.
            pub deliver_latency: LatencyHistogram,
            /// How long each group commit's sync took (off the reactor, from hand-off to answer).
            pub flush_latency: LatencyHistogram,
            /// Bytes held by each retained reality this shard owns, republished about once a
            /// second by the shard (not on the data path).
            pub retained: RetainedBytes,
            /// Per hosted operator, what this shard counted, republished about once a second.
            pub operators: Published<OperatorCounts>,
            /// This shard's tenant compartments (task queues), published once at start.
            pub lanes: Published<Vec<Arc<LaneCounters>>>,
        }

        /// A point-in-time copy of counters, summed over shards.
        #[derive(Debug, Default, Clone, PartialEq, Eq)]
        pub struct Snapshot {
            $( $(#[doc = $doc])* pub $name: u64, )*
            pub deliver_latency: HistogramSnapshot,
            pub flush_latency: HistogramSnapshot,
            /// (reality, bytes) of every retained reality, largest first.
            pub retained: RealityBytes,
            /// Per hosted operator, summed over shards, by name.
            pub operators: OperatorCounts,
            /// Every compartment of every shard, in shard order.
            pub lanes: Vec<LaneSnapshot>,
        }

        impl Snapshot {
            /// Sums the counters of every shard.
            pub fn sum<'a>(shards: impl IntoIterator<Item = &'a ShardCounters>) -> Self {
                let mut s = Self::default();
                for (shard, c) in shards.into_iter().enumerate() {
                    s.lanes.extend(c.lanes.get().iter().map(|l| l.snapshot(shard)));
                    $( s.$name += c.$name.get(); )*
                    s.deliver_latency.add(&c.deliver_latency);
                    s.flush_latency.add(&c.flush_latency);
                    s.retained.extend(c.retained.get().iter().cloned());
                    for op in c.operators.get().iter() {
                        match s.operators.iter_mut().find(|o| o.name == op.name) {
                            Some(sum) => sum.add(op),
                            None => s.operators.push(op.clone()),
                        }
                    }
                }
                s.retained.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));

                s
            }

            /// (name, value) pairs, for exposition.
            pub fn fields(&self) -> Vec<(&'static str, u64)> {
                vec![$( (stringify!($name), self.$name), )*]
            }

            /// Every counter with its exposed name (Prometheus, without the `arqonbus_` prefix)
            /// and its help text (the field's doc comment).
            pub fn counters(&self) -> Vec<CounterField> {
                vec![$( CounterField {
                    field: stringify!($name),
                    exposed: $exposed,
                    help: concat!($($doc),*),
                    value: self.$name,
                }, )*]
            }
        }
    };
}

/// One counter of a [`Snapshot`], described for exposition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CounterField {
    /// The Rust field name.
    pub field: &'static str,
    /// The metric name after `arqonbus_`; counters end in `_total`, byte counts say `bytes`.
    pub exposed: &'static str,
    pub help: &'static str,
    pub value: u64,
}

counters! {
    /// Connections accepted.
    connections_accepted => "connections_accepted_total",
    /// Connections closed, for any reason.
    connections_closed => "connections_closed_total",
    /// Connections refused because the shard was at limits.max_connections_per_shard or
    /// stopping.
    connections_refused => "connections_refused_total",
    /// Frames received from clients.
    frames_in => "frames_received_total",
    /// Bytes received from clients.
    bytes_in => "received_bytes_total",
    /// Bytes written to clients.
    bytes_out => "sent_bytes_total",
    /// Pulses sequenced by their reality's owner shard (pulses in).
    pulses_sequenced => "pulses_sequenced_total",
    /// Pulses queued for delivery to a subscription (pulses out, one per subscription).
    pulses_delivered => "pulses_delivered_total",
    /// Pulses a subscription's filter refused (`Subscribe.filter`), live or replayed, counted
    /// once per subscription that refused it, on the shard that evaluated the filter.
    pulses_filtered => "pulses_filtered_total",
    /// Pulses of delta-only topics that have a delta form besides their keyframe (counted by
    /// the owner, once per pulse).
    delta_pulses => "delta_pulses_total",
    /// Deliveries sent as a delta rather than the whole state.
    delta_deliveries => "delta_deliveries_total",
    /// Deliveries of delta-only pulses sent whole because the subscription's chain was not at
    /// the delta's base (its first pulse of the topic, or it missed one).
    delta_keyframes_resent => "delta_keyframes_resent_total",
    /// Reality parameter changes sequenced (`sys.control.param.set`).
    params_set => "params_set_total",
    /// Publishes of operators (sessions with a manifest) refused because the payload's type is
    /// not one their manifest declares for the topic (TYPE_MISMATCH).
    type_mismatches => "type_mismatches_total",
    /// Deliveries dropped by the shed slow-consumer policy.
    pulses_shed => "pulses_shed_total",
    /// Pulses a causal subscription held for limits.causal_hold_ms without their dependencies
    /// arriving, dropped for it (and reported with `Dropped`).
    causal_expired => "causal_expired_total",
    /// Pulses a causal subscription held, dropped (oldest first, reported with `Dropped`)
    /// because its connection held limits.max_causal_held.
    causal_evicted => "causal_evicted_total",
    /// Connections closed by the disconnect slow-consumer policy, or for overflowing with
    /// answers they never read.
    slow_consumer_disconnects => "slow_consumer_disconnects_total",
    /// Idle ephemeral realities a shard forgot to make room under
    /// limits.max_realities_per_shard (their sequence starts again at 1 if used again).
    realities_evicted => "realities_evicted_total",
    /// Protocol errors that closed a connection (oversize, undecodable, no Hello).
    protocol_errors => "protocol_errors_total",
    /// Requests answered with a non-fatal error (invalid topic or reality, limits).
    request_errors => "request_errors_total",
    /// Times a producer waited for room in a full outbox or ring (backpressure between shards).
    ring_full_waits => "ring_full_waits_total",
    /// Requests refused (INTERNAL) because the shard that owns their reality has failed.
    owner_failed_refusals => "owner_failed_refusals_total",
    /// Records of retained realities found intact by recovery at start.
    recovered_records => "recovered_records_total",
    /// Torn tails truncated by recovery at start.
    recovery_truncations => "recovery_truncations_total",
    /// Old segments deleted by retention.
    segments_trimmed => "segments_trimmed_total",
    /// Group commits of retained realities: syncs that made written records durable.
    storage_flushes => "storage_flushes_total",
    /// Pulses those flushes made durable (divided by the flushes: the group-commit batch size).
    storage_flushed_pulses => "storage_flushed_pulses_total",
    /// Policy inspections run (one per policy per pulse it binds).
    policy_evaluations => "policy_evaluations_total",
    /// Pulses blocked because a policy answered deny (POLICY_DENIED).
    policy_denials => "policy_denials_total",
    /// Pulses blocked because a policy failed: trap, fuel, deadline, instantiation, bad answer
    /// (POLICY_FAULT).
    policy_faults => "policy_faults_total",
    /// Policy instances created on this shard (first use, and after each fault).
    policy_instantiations => "policy_instantiations_total",
    /// `sys.control.*` pulses received.
    control_pulses => "control_pulses_total",
    /// `sys.control.*` pulses refused (not a controller, malformed, or not applicable).
    control_refusals => "control_refusals_total",
    /// Keepalive Pings sent to sessions idle for half of `limits.idle_timeout_ms`.
    keepalive_pings => "keepalive_pings_total",
    /// Sessions closed for sending nothing for `limits.idle_timeout_ms`.
    idle_disconnects => "idle_disconnects_total",
    /// Connections closed because a frame did not complete within `limits.frame_timeout_ms`.
    frame_timeouts => "frame_timeouts_total",
    /// `sys.control.*` pulses refused because the session is not a controller (also counted
    /// in `control_refusals`); recorded in the audit log only as a count per window.
    control_non_controller_refusals => "control_non_controller_refusals_total",
    /// Inputs a hosted operator was called on (one per operator per input it binds).
    operator_calls => "operator_calls_total",
    /// Pulses hosted operators emitted and the bus sequenced.
    operator_emitted => "operator_emitted_total",
    /// Operator calls that failed (trap, fuel, deadline, memory, an emit cap, a bad emit, an
    /// instance that cannot be made); all of that input's outputs were dropped.
    operator_faults => "operator_faults_total",
    /// Times an operator was parked for a reality after too many faults in a row.
    operator_parked => "operator_parked_total",
    /// Operator instances made (first input of an operator in a reality, or after a fault).
    operator_instantiations => "operator_instantiations_total",
    /// Hellos refused with UNAUTHENTICATED (bad, expired or missing token; identity mismatch).
    auth_failures => "auth_failures_total",
    /// Sessions closed (UNAUTHENTICATED) because their token expired while they were open.
    sessions_expired => "sessions_expired_total",
    /// Sessions closed (UNAUTHENTICATED) because a reload of `auth.revocation_file` revoked
    /// their token while they were open.
    sessions_revoked => "sessions_revoked_total",
    /// Connections closed on arrival because their address failed to authenticate too often.
    auth_blocked_connections => "auth_blocked_connections_total",
    /// TLS handshakes that failed or timed out (wrong version, no client certificate, ...).
    tls_handshake_failures => "tls_handshake_failures_total",
    /// WebSocket upgrades that failed or timed out.
    ws_handshake_failures => "ws_handshake_failures_total",
    /// Requests refused with PERMISSION_DENIED (outside the session's grants or roles).
    permission_denied => "permission_denied_total",
    /// Requests refused with QUOTA_EXCEEDED (a tenant quota).
    quota_exceeded => "quota_exceeded_total",
}

/// A counter with one writer.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds `n`. Only the owning shard calls this, so a load and a store suffice.
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.store(
            self.0.load(Ordering::Relaxed).wrapping_add(n),
            Ordering::Relaxed,
        );
    }

    #[inline]
    pub fn inc(&self) {
        self.add(1);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    /// Sets the value: for the few counters that hold a moment rather than a count.
    pub fn set(&self, value: u64) {
        self.0.store(value, Ordering::Relaxed);
    }
}

/// The retained realities of one shard and the bytes each holds, republished about once a
/// second.
pub type RetainedBytes = Published<RealityBytes>;

/// A value one shard republishes now and then (a list too long for fixed counters) and scrapes
/// read: swapped whole under a lock held only for the pointer swap, never on the data path.
#[derive(Debug, Default)]
pub struct Published<T>(Mutex<Arc<T>>);

impl<T> Published<T> {
    pub fn publish(&self, value: T) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Arc::new(value);
    }

    pub fn get(&self) -> Arc<T> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// What one hosted operator did: counted on each owner shard, summed at scrape time.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct OperatorCount {
    pub name: Arc<str>,
    pub calls: u64,
    pub emitted: u64,
    pub faults: u64,
    /// Realities it is parked in now.
    pub parked_realities: u64,
}

impl OperatorCount {
    fn add(&mut self, other: &OperatorCount) {
        self.calls += other.calls;
        self.emitted += other.emitted;
        self.faults += other.faults;
        self.parked_realities += other.parked_realities;
    }
}

/// What one compartment of one shard did: a tenant's task queue (or the shared queue of tenants
/// without an entry, the handshake queue, or the shard's own queue `shard`). Written only by its
/// shard.
#[derive(Debug, Default)]
pub struct LaneCounters {
    /// The tenant it serves; `None` for the handshake and the shard's own queue.
    pub tenant: Option<Arc<str>>,
    /// The task queue's name.
    pub queue: Arc<str>,
    pub published_pulses: Counter,
    pub published_bytes: Counter,
    /// Requests refused over one of the tenant's quotas.
    pub quota_refusals: Counter,
    /// Policy faults of its pulses and protocol errors of its sessions.
    pub faults: Counter,
    /// Times this shard started throttling the tenant.
    pub throttles: Counter,
    /// Until when (Unix nanoseconds) the tenant is throttled on this shard.
    pub throttled_until_nanos: Counter,
    pub history_reads: Counter,
    /// Pulses shed for its slow subscribers.
    pub sheds: Counter,
    /// CPU time the queue's tasks ran (glommio's account, updated about once a second).
    pub queue_runtime_nanos: Counter,
    /// How late a timer of the queue ran (sampled every few milliseconds): how long work that
    /// became ready waited for the queue's turn.
    pub queue_delay: LatencyHistogram,
}

impl LaneCounters {
    fn snapshot(&self, shard: usize) -> LaneSnapshot {
        let mut queue_delay = HistogramSnapshot::default();
        queue_delay.add(&self.queue_delay);
        LaneSnapshot {
            shard,
            tenant: self.tenant.clone(),
            queue: self.queue.clone(),
            published_pulses: self.published_pulses.get(),
            published_bytes: self.published_bytes.get(),
            quota_refusals: self.quota_refusals.get(),
            faults: self.faults.get(),
            throttles: self.throttles.get(),
            throttled_until_nanos: self.throttled_until_nanos.get(),
            history_reads: self.history_reads.get(),
            sheds: self.sheds.get(),
            queue_runtime_nanos: self.queue_runtime_nanos.get(),
            queue_delay,
        }
    }
}

/// A copy of one shard's [`LaneCounters`].
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LaneSnapshot {
    pub shard: usize,
    pub tenant: Option<Arc<str>>,
    pub queue: Arc<str>,
    pub published_pulses: u64,
    pub published_bytes: u64,
    pub quota_refusals: u64,
    pub faults: u64,
    pub throttles: u64,
    pub throttled_until_nanos: u64,
    pub history_reads: u64,
    pub sheds: u64,
    pub queue_runtime_nanos: u64,
    pub queue_delay: HistogramSnapshot,
}

/// Every loaded operator's counts (bounded by `operator.max_operators`).
pub type OperatorCounts = Vec<OperatorCount>;

/// (reality, bytes of records it holds).
pub type RealityBytes = Vec<(Arc<str>, u64)>;

/// Upper bounds (inclusive) of the latency buckets, in nanoseconds: 5 µs to 10 s. Fixed, so
/// shards can be summed bucket by bucket and a scrape allocates nothing per shard.
pub const LATENCY_BOUNDS_NANOS: [u64; 20] = [
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// Buckets: one per bound, plus one for everything above the last.
const LATENCY_BUCKETS: usize = LATENCY_BOUNDS_NANOS.len() + 1;

/// A fixed-bucket histogram with one writer (its shard), like [`Counter`].
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    /// Observations per bucket (not cumulative).
    buckets: [Counter; LATENCY_BUCKETS],
    sum_nanos: Counter,
}

impl LatencyHistogram {
    /// Records one observation. Only the owning shard calls this.
    #[inline]
    pub fn observe_nanos(&self, nanos: u64) {
        let bucket = LATENCY_BOUNDS_NANOS.partition_point(|&bound| bound < nanos);
        self.buckets[bucket].inc();
        self.sum_nanos.add(nanos);
    }
}

/// The same buckets with any number of writers (a circuit edge's hop latency, recorded on
/// whichever shard the consuming operator is on).
#[derive(Debug, Default)]
pub struct SharedLatencyHistogram {
    buckets: [AtomicU64; LATENCY_BUCKETS],
    sum_nanos: AtomicU64,
}

impl SharedLatencyHistogram {
    #[inline]
    pub fn observe_nanos(&self, nanos: u64) {
        let bucket = LATENCY_BOUNDS_NANOS.partition_point(|&bound| bound < nanos);
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            buckets: std::array::from_fn(|i| self.buckets[i].load(Ordering::Relaxed)),
            sum_nanos: self.sum_nanos.load(Ordering::Relaxed),
        }
    }
}

/// A copy of one or more [`LatencyHistogram`]s, summed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct HistogramSnapshot {
    /// Observations per bucket (not cumulative); the last is above every bound.
    pub buckets: [u64; LATENCY_BUCKETS],
    pub sum_nanos: u64,
}

impl HistogramSnapshot {
    fn add(&mut self, h: &LatencyHistogram) {
        for (total, bucket) in self.buckets.iter_mut().zip(&h.buckets) {
            *total += bucket.get();
        }
        self.sum_nanos += h.sum_nanos.get();
    }

    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// The upper bound of the bucket holding quantile `q` (0 < q <= 1): an estimate no lower
    /// than the true value, within one bucket. `None` without observations; `u64::MAX` when it
    /// lies above the last bound.
    pub fn quantile_upper_nanos(&self, q: f64) -> Option<u64> {
        let count = self.count();
        if count == 0 {
            return None;
        }
        let rank = ((q * count as f64).ceil() as u64).clamp(1, count);
        Some(
            self.cumulative()
                .find(|(_, n)| *n >= rank)
                .map_or(u64::MAX, |(bound, _)| bound),
        )
    }

    /// (upper bound in nanoseconds, cumulative count) per bound; the `+Inf` bucket is
    /// [`HistogramSnapshot::count`].
    pub fn cumulative(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        LATENCY_BOUNDS_NANOS
            .iter()
            .zip(&self.buckets)
            .scan(0, |acc, (bound, n)| {
                *acc += n;
                Some((*bound, *acc))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_sums_shards() {
        let a = ShardCounters::default();
        let b = ShardCounters::default();
        a.pulses_sequenced.add(3);
        b.pulses_sequenced.inc();
        b.pulses_shed.add(7);
        a.deliver_latency.observe_nanos(7_000);
        b.deliver_latency.observe_nanos(7_000);
        let s = Snapshot::sum([&a, &b]);
        assert_eq!(s.pulses_sequenced, 4);
        assert_eq!(s.pulses_shed, 7);
        assert!(s.fields().contains(&("pulses_shed", 7)));
        assert_eq!(s.deliver_latency.count(), 2);
        assert_eq!(s.deliver_latency.sum_nanos, 14_000);
    }

    #[test]
    fn retained_bytes_are_merged_over_shards_largest_first() {
        let a = ShardCounters::default();
        let b = ShardCounters::default();
        a.retained
            .publish(vec![("lab-1".into(), 10), ("lab-3".into(), 30)]);
        b.retained.publish(vec![("lab-2".into(), 20)]);
        let s = Snapshot::sum([&a, &b]);
        let names: Vec<(&str, u64)> = s.retained.iter().map(|(r, n)| (&**r, *n)).collect();
        assert_eq!(names, [("lab-3", 30), ("lab-2", 20), ("lab-1", 10)]);
        // A newer list replaces the shard's old one.
        a.retained.publish(vec![("lab-1".into(), 11)]);
        let s = Snapshot::sum([&a, &b]);
        assert_eq!(s.retained.len(), 2);
        assert_eq!(s.retained[0], ("lab-2".into(), 20));
    }

    #[test]
    fn shared_histogram_quantiles_are_bucket_upper_bounds() {
        let h = SharedLatencyHistogram::default();
        assert_eq!(h.snapshot().quantile_upper_nanos(0.5), None);
        for _ in 0..98 {
            h.observe_nanos(4_000); // first bucket (<= 5 µs)
        }
        h.observe_nanos(40_000); // <= 50 µs
        h.observe_nanos(20_000_000_000); // above every bound
        let s = h.snapshot();
        assert_eq!(s.count(), 100);
        assert_eq!(s.quantile_upper_nanos(0.5), Some(5_000));
        assert_eq!(s.quantile_upper_nanos(0.98), Some(5_000));
        assert_eq!(s.quantile_upper_nanos(0.99), Some(50_000));
        assert_eq!(s.quantile_upper_nanos(1.0), Some(u64::MAX));
        assert_eq!(s.sum_nanos, 98 * 4_000 + 40_000 + 20_000_000_000);
    }

    #[test]
    fn histogram_bounds_are_inclusive_and_cumulative() {
        let h = LatencyHistogram::default();
        h.observe_nanos(0);
        h.observe_nanos(5_000); // on the first bound: first bucket
        h.observe_nanos(5_001); // just above: second bucket
        h.observe_nanos(u64::MAX / 2); // above every bound
        let s = Snapshot::sum([&ShardCounters {
            deliver_latency: h,
            ..Default::default()
        }])
        .deliver_latency;
        let cumulative: Vec<_> = s.cumulative().collect();
        assert_eq!(cumulative[0], (5_000, 2));
        assert_eq!(cumulative[1], (10_000, 3));
        assert_eq!(cumulative.last().unwrap(), &(10_000_000_000, 3));
        assert_eq!(s.count(), 4);
    }

    #[test]
    fn every_counter_is_described() {
        let s = Snapshot::default();
        let counters = s.counters();
        assert_eq!(counters.len(), s.fields().len());
        for c in counters {
            assert!(c.exposed.ends_with("_total"), "{} is a counter", c.exposed);
            assert!(!c.help.trim().is_empty(), "{} has help", c.field);
        }
    }
}
