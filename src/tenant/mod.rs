//! Tenant bulkheads: per-tenant quotas that keep one tenant from taking what another needs.
//!
//! - Connections, subscriptions, retained realities and retained bytes span shards: one small
//!   shared atomic per tenant, touched at connect, disconnect, subscribe and unsubscribe (for
//!   retained realities, when one is created; for retained bytes, per retained publish and when
//!   retention deletes a segment), never per delivered pulse.
//! - Publish rates are token buckets kept by each shard for its own connections, each holding
//!   `rate / shards`: the kernel spreads connections over shards, so the bound holds in
//!   aggregate without any sharing per pulse. A tenant whose connections all land on one shard
//!   gets that shard's share, not the whole rate.

pub mod lanes;

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::config::{Config, TenantQuota};

/// The counters of one tenant, shared by every shard.
#[derive(Debug, Default)]
pub struct TenantShared {
    pub quota: TenantQuota,
    connections: AtomicU64,
    subscriptions: AtomicU64,
    retained_bytes: AtomicU64,
    retained_realities: AtomicU64,
}

/// A reservation refused: which quota, for the client's error message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverQuota(pub String);

fn reserve(counter: &AtomicU64, max: u64, n: u64) -> bool {
    if max == 0 {
        counter.fetch_add(n, Ordering::Relaxed);
        return true;
    }
    counter
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
            (v + n <= max).then_some(v + n)
        })
        .is_ok()
}

impl TenantShared {
    pub fn reserve_connection(&self) -> Result<(), OverQuota> {
        if reserve(&self.connections, self.quota.max_connections, 1) {
            return Ok(());
        }
        Err(OverQuota(format!(
            "tenant `{}` has {} connections (tenants.max_connections)",
            self.quota.name, self.quota.max_connections
        )))
    }

    pub fn release_connection(&self) {
        self.connections.fetch_sub(1, Ordering::AcqRel);
    }

    pub fn reserve_subscription(&self) -> Result<(), OverQuota> {
        if reserve(&self.subscriptions, self.quota.max_subscriptions, 1) {
            return Ok(());
        }
        Err(OverQuota(format!(
            "tenant `{}` has {} subscriptions (tenants.max_subscriptions)",
            self.quota.name, self.quota.max_subscriptions
        )))
    }

    pub fn release_subscription(&self) {
        self.subscriptions.fetch_sub(1, Ordering::AcqRel);
    }

    /// Counts `bytes` a publish will add to a retained reality.
    pub fn reserve_retained(&self, bytes: u64) -> Result<(), OverQuota> {
        if reserve(&self.retained_bytes, self.quota.max_retained_bytes, bytes) {
            return Ok(());
        }
        Err(OverQuota(format!(
            "tenant `{}` has used its {} retained bytes (tenants.max_retained_bytes)",
            self.quota.name, self.quota.max_retained_bytes
        )))
    }

    /// Counts a retained reality a publish of this tenant is about to create. Called by the
    /// reality's owner shard before any file is made.
    pub fn reserve_retained_reality(&self) -> Result<(), OverQuota> {
        if reserve(
            &self.retained_realities,
            self.quota.max_retained_realities,
            1,
        ) {
            return Ok(());
        }
        Err(OverQuota(format!(
            "tenant `{}` has created its {} retained realities (tenants.max_retained_realities)",
            self.quota.name, self.quota.max_retained_realities
        )))
    }

    /// Gives back a reservation whose reality could not be created.
    pub fn release_retained_reality(&self) {
        self.retained_realities.fetch_sub(1, Ordering::AcqRel);
    }

    /// Counts a retained reality found on disk at start: it exists, so it counts even past the
    /// quota (which then refuses new ones).
    pub fn count_recovered_reality(&self) {
        self.retained_realities.fetch_add(1, Ordering::AcqRel);
    }

    pub fn retained_realities(&self) -> u64 {
        self.retained_realities.load(Ordering::Relaxed)
    }

    /// Gives back bytes counted by `reserve_retained`: the pulse was refused, or retention
    /// deleted it.
    pub fn release_retained(&self, bytes: u64) {
        let _ = self
            .retained_bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
                Some(v.saturating_sub(bytes))
            });
    }

    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }

    pub fn subscriptions(&self) -> u64 {
        self.subscriptions.load(Ordering::Relaxed)
    }

    pub fn retained_bytes(&self) -> u64 {
        self.retained_bytes.load(Ordering::Relaxed)
    }

    /// A tenant with quotas whose enforcement needs the shared counters.
    pub fn is_bounded(&self) -> bool {
        let q = &self.quota;
        q.max_connections + q.max_subscriptions + q.max_retained_bytes > 0
    }
}

/// Every configured tenant, built once at start. Tenants without a `[[tenants]]` entry have no
/// quota and no entry here.
#[derive(Debug, Default)]
pub struct Tenants {
    by_name: HashMap<String, Arc<TenantShared>>,
}

impl Tenants {
    pub fn from_config(config: &Config) -> Self {
        let by_name = config
            .tenants
            .iter()
            .map(|q| {
                let shared = TenantShared {
                    quota: q.clone(),
                    ..Default::default()
                };
                (q.name.clone(), Arc::new(shared))
            })
            .collect();
        Self { by_name }
    }

    pub fn get(&self, tenant: &str) -> Option<&Arc<TenantShared>> {
        self.by_name.get(tenant)
    }
}

/// One shard's publish buckets for one tenant (single-threaded).
///
/// A bucket starts full (one second of the shard's share) and refills continuously. A publish
/// passes while the bucket is not in debt and then takes its cost, so a pulse larger than the
/// per-shard byte rate still passes now and then instead of never.
#[derive(Debug)]
pub struct RateBuckets {
    pulses_per_sec: f64,
    bytes_per_sec: f64,
    fuel_per_sec: f64,
    pulses: Cell<f64>,
    bytes: Cell<f64>,
    /// Policy fuel: charged after the policies ran (what they burnt is known only then), so a
    /// publish is refused once the bucket is in debt.
    fuel: Cell<f64>,
    last_nanos: Cell<u64>,
}

impl RateBuckets {
    /// The buckets for `quota` on one of `shards` shards; `None` when the tenant has no rate.
    pub fn new(quota: &TenantQuota, shards: usize, now_nanos: u64) -> Option<Self> {
        if quota.publish_pulses_per_sec == 0
            && quota.publish_bytes_per_sec == 0
            && quota.policy_fuel_per_sec == 0
        {
            return None;
        }
        let share = |rate: u64| rate as f64 / shards.max(1) as f64;
        let pulses_per_sec = share(quota.publish_pulses_per_sec);
        let bytes_per_sec = share(quota.publish_bytes_per_sec);
        let fuel_per_sec = share(quota.policy_fuel_per_sec);
        Some(Self {
            pulses_per_sec,
            bytes_per_sec,
            fuel_per_sec,
            pulses: Cell::new(pulses_per_sec),
            bytes: Cell::new(bytes_per_sec),
            fuel: Cell::new(fuel_per_sec),
            last_nanos: Cell::new(now_nanos),
        })
    }

    /// Takes one pulse of `bytes` if the buckets allow it now; otherwise names the quota and
    /// how long until they would.
    pub fn try_take(
        &self,
        bytes: usize,
        now_nanos: u64,
    ) -> Result<(), (&'static str, std::time::Duration)> {
        let elapsed = now_nanos.saturating_sub(self.last_nanos.get()) as f64 / 1e9;
        self.last_nanos.set(now_nanos.max(self.last_nanos.get()));
        let refill = |cell: &Cell<f64>, rate: f64| {
            if rate > 0.0 {
                cell.set((cell.get() + elapsed * rate).min(rate));
            }
        };
        refill(&self.pulses, self.pulses_per_sec);
        refill(&self.bytes, self.bytes_per_sec);
        refill(&self.fuel, self.fuel_per_sec);
        let wait = |missing: f64, rate: f64| std::time::Duration::from_secs_f64(missing / rate);
        if self.pulses_per_sec > 0.0 && self.pulses.get() < 1.0 {
            let missing = 1.0 - self.pulses.get();
            return Err((
                "tenants.publish_pulses_per_sec",
                wait(missing, self.pulses_per_sec),
            ));
        }
        if self.bytes_per_sec > 0.0 && self.bytes.get() < 0.0 {
            let missing = -self.bytes.get();
            return Err((
                "tenants.publish_bytes_per_sec",
                wait(missing, self.bytes_per_sec),
            ));
        }
        if self.fuel_per_sec > 0.0 && self.fuel.get() < 0.0 {
            let missing = -self.fuel.get();
            return Err((
                "tenants.policy_fuel_per_sec",
                wait(missing, self.fuel_per_sec),
            ));
        }
        self.pulses.set(self.pulses.get() - 1.0);
        self.bytes.set(self.bytes.get() - bytes as f64);
        Ok(())
    }

    /// Charges the fuel the tenant's policies burnt on a pulse [`try_take`](Self::try_take)
    /// let through; the next publish waits while the bucket is in debt.
    pub fn charge_fuel(&self, fuel: u64) {
        if self.fuel_per_sec > 0.0 {
            self.fuel.set(self.fuel.get() - fuel as f64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quota(pulses: u64, bytes: u64) -> TenantQuota {
        TenantQuota {
            name: "t".into(),
            publish_pulses_per_sec: pulses,
            publish_bytes_per_sec: bytes,
            ..Default::default()
        }
    }

    #[test]
    fn pulse_bucket_allows_its_rate_then_refuses_then_refills() {
        let b = RateBuckets::new(&quota(100, 0), 2, 0).unwrap();
        let passed = (0..200).filter(|_| b.try_take(10, 0).is_ok()).count();
        assert_eq!(passed, 50, "a shard gets half of the tenant's rate");
        assert!(b.try_take(10, 100_000_000).is_ok(), "100 ms refills 5");
        let more = (0..10)
            .filter(|_| b.try_take(10, 100_000_000).is_ok())
            .count();
        assert_eq!(more, 4);
    }

    #[test]
    fn byte_bucket_lets_a_large_pulse_through_then_waits() {
        let b = RateBuckets::new(&quota(0, 1000), 1, 0).unwrap();
        assert!(b.try_take(5000, 0).is_ok());
        let (key, wait) = b.try_take(1, 0).unwrap_err();
        assert_eq!(key, "tenants.publish_bytes_per_sec");
        assert_eq!(
            wait,
            std::time::Duration::from_secs(4),
            "4000 bytes in debt at 1000/s"
        );
        assert!(b.try_take(1, 2_000_000_000).is_err());
        assert!(b.try_take(1, 5_000_000_000).is_ok());
    }

    #[test]
    fn fuel_in_debt_refuses_until_it_refills() {
        let q = TenantQuota {
            name: "t".into(),
            policy_fuel_per_sec: 1000,
            ..Default::default()
        };
        let b = RateBuckets::new(&q, 1, 0).unwrap();
        assert!(
            b.try_take(10, 0).is_ok(),
            "no pulse or byte rate: only fuel counts"
        );
        b.charge_fuel(3000);
        let (key, wait) = b.try_take(10, 0).unwrap_err();
        assert_eq!(key, "tenants.policy_fuel_per_sec");
        assert_eq!(
            wait,
            std::time::Duration::from_secs(2),
            "2000 in debt at 1000/s"
        );
        assert!(b.try_take(10, 1_000_000_000).is_err());
        assert!(b.try_take(10, 2_000_000_000).is_ok());
    }

    #[test]
    fn shared_counters_bound_connections() {
        let t = TenantShared {
            quota: TenantQuota {
                name: "t".into(),
                max_connections: 2,
                ..Default::default()
            },
            ..Default::default()
        };
        assert!(t.reserve_connection().is_ok());
        assert!(t.reserve_connection().is_ok());
        assert!(t.reserve_connection().is_err());
        t.release_connection();
        assert!(t.reserve_connection().is_ok());
        assert_eq!(t.connections(), 2);
    }

    #[test]
    fn retained_bytes_given_back_make_room_again() {
        let t = TenantShared {
            quota: TenantQuota {
                name: "t".into(),
                max_retained_bytes: 100,
                ..Default::default()
            },
            ..Default::default()
        };
        assert!(t.reserve_retained(60).is_ok());
        assert!(t.reserve_retained(60).is_err());
        t.release_retained(60);
        assert!(t.reserve_retained(60).is_ok());
        t.release_retained(1000);
        assert_eq!(t.retained_bytes(), 0, "never below zero");
    }
}
