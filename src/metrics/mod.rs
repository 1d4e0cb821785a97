//! Per-shard counters.
//!
//! Each shard owns one [`ShardCounters`] and is its only writer: an increment is a relaxed load
//! and store (no locked read-modify-write, no cache line shared with another writer). Readers on
//! other threads (the admin endpoint, tests) load the values and sum them over shards.

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($( $(#[$doc:meta])* $name:ident ),* $(,)?) => {
        /// Counters of one shard. Written only by that shard.
        #[derive(Debug, Default)]
        #[repr(align(128))]
        pub struct ShardCounters {
            $( $(#[$doc])* pub $name: Counter, )*
        }

        /// A point-in-time copy of counters, summed over shards.
        #[derive(Debug, Default, Clone, PartialEq, Eq)]
        pub struct Snapshot {
            $( $(#[$doc])* pub $name: u64, )*
        }

        impl Snapshot {
            /// Sums the counters of every shard.
            pub fn sum<'a>(shards: impl IntoIterator<Item = &'a ShardCounters>) -> Self {
                let mut s = Self::default();
                for c in shards {
                    $( s.$name += c.$name.get(); )*
                }
                s
            }

            /// (name, value) pairs, for exposition.
            pub fn fields(&self) -> Vec<(&'static str, u64)> {
                vec![$( (stringify!($name), self.$name), )*]
            }
        }
    };
}

counters! {
    /// Connections accepted.
    connections_accepted,
    /// Connections closed, for any reason.
    connections_closed,
    /// Connections refused because the shard was at max_connections_per_shard.
    connections_refused,
    /// Frames received from clients.
    frames_in,
    /// Bytes received from clients.
    bytes_in,
    /// Bytes written to clients.
    bytes_out,
    /// Pulses sequenced by this shard (as owner).
    pulses_sequenced,
    /// Pulses queued for delivery to subscribers on this shard.
    pulses_delivered,
    /// Deliveries dropped by the shed policy.
    pulses_shed,
    /// Connections closed by the disconnect slow-consumer policy, or for overflowing with
    /// answers they never read.
    slow_consumer_disconnects,
    /// Protocol errors that closed a connection (oversize, undecodable, no Hello).
    protocol_errors,
    /// Requests answered with a non-fatal error.
    request_errors,
    /// Times a producer waited for room in a full outbox or ring.
    ring_full_waits,
    /// Records found intact by recovery at start.
    recovered_records,
    /// Torn tails truncated by recovery.
    recovery_truncations,
    /// Old segments deleted by retention.
    segments_trimmed,
    /// Policy inspections run (one per policy per pulse it binds).
    policy_evaluations,
    /// Pulses blocked because a policy answered deny (POLICY_DENIED).
    policy_denials,
    /// Pulses blocked because a policy failed: trap, fuel, deadline, instantiation, bad answer
    /// (POLICY_FAULT).
    policy_faults,
    /// Policy instances created on this shard (first use, and after each fault).
    policy_instantiations,
    /// `sys.control.*` pulses received.
    control_pulses,
    /// `sys.control.*` pulses refused (not a controller, malformed, or not applicable).
    control_refusals,
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
        let s = Snapshot::sum([&a, &b]);
        assert_eq!(s.pulses_sequenced, 4);
        assert_eq!(s.pulses_shed, 7);
        assert!(s.fields().contains(&("pulses_shed", 7)));
    }
}
