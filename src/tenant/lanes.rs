//! Compartments: one shard's task queues, one per tenant with a `[[tenants]]` entry.
//!
//! A session runs its handshake (TLS, WebSocket upgrade, Hello) in the shard's handshake queue,
//! then the rest of its life — reading and serving frames, its policy calls, writing — in the
//! queue of its tenant's lane; history reads it asks of an owner shard run there in the same
//! tenant's lane. glommio serves the queues by share (the lowest virtual runtime first), not by
//! arrival: a tenant with ready work cannot keep another's ready work waiting beyond its share.
//! The shard's own work (ring consumers, sequencing, fan-out, storage) stays in the executor's
//! default queue, at the most shares.
//!
//! A lane also keeps what its tenant costs the shard: the publish and fuel buckets, history
//! reads in flight, and a fault window. A tenant whose policy faults or whose clients break the
//! protocol more than `tenancy.max_faults_per_sec` times in a second on a shard is throttled
//! there for `tenancy.throttle_ms`: its sessions are left unread and its new sessions refused.
//!
//! Lanes are made in the same order on every shard (the default lane, then the `[[tenants]]`
//! entries), so a [`LaneId`] means the same tenant on every shard and can travel with a request.

use std::cell::Cell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use glommio::{Latency, Shares, TaskQueueHandle};

use super::RateBuckets;
use crate::config::{Config, TenantClass};
use crate::metrics::LaneCounters;

/// A lane's place in every shard's list.
pub type LaneId = u16;

/// The lane of tenants without a `[[tenants]]` entry.
pub const DEFAULT_LANE: LaneId = 0;

/// How often each queue's delay is sampled.
const PROBE_INTERVAL: Duration = Duration::from_millis(25);
/// How often each queue's runtime is taken from the executor (in probe intervals).
const RUNTIME_EVERY: u32 = 40;

/// One tenant's compartment on one shard.
pub struct Lane {
    pub id: LaneId,
    queue: TaskQueueHandle,
    /// The tenant's publish and fuel buckets for this shard, when it has such quotas.
    pub buckets: Option<RateBuckets>,
    pub counters: Arc<LaneCounters>,
    max_history_reads: u64,
    history_reads: Cell<u64>,
    max_faults: u64,
    throttle_nanos: u64,
    window_start_nanos: Cell<u64>,
    faults_in_window: Cell<u64>,
}

impl Lane {
    /// The tenant's name (`*` for the default lane).
    pub fn name(&self) -> &str {
        self.counters.tenant.as_deref().unwrap_or("*")
    }

    pub fn queue(&self) -> TaskQueueHandle {
        self.queue
    }

    /// Counts a fault of the tenant on this shard at `now` (Unix nanoseconds). True when this
    /// fault starts a throttle.
    pub fn note_fault(&self, now: u64) -> bool {
        self.counters.faults.inc();
        if now.saturating_sub(self.window_start_nanos.get()) >= 1_000_000_000 {
            self.window_start_nanos.set(now);
            self.faults_in_window.set(0);
        }
        let faults = self.faults_in_window.get() + 1;
        self.faults_in_window.set(faults);
        if faults <= self.max_faults || self.throttled_for(now).is_some() {
            return false;
        }
        self.counters
            .throttled_until_nanos
            .set(now.saturating_add(self.throttle_nanos));
        self.counters.throttles.inc();
        tracing::warn!(
            tenant = self.name(),
            faults,
            throttle_ms = self.throttle_nanos / 1_000_000,
            "tenant throttled: too many policy faults and protocol errors in a second \
             (tenancy.max_faults_per_sec); its sessions on this shard are left unread and its \
             new ones refused"
        );
        true
    }

    /// Whether this shard ever throttled the tenant (so readers can skip the clock until then).
    pub fn ever_throttled(&self) -> bool {
        self.counters.throttled_until_nanos.get() != 0
    }

    /// How much longer the tenant is throttled on this shard, if it is.
    pub fn throttled_for(&self, now: u64) -> Option<Duration> {
        let until = self.counters.throttled_until_nanos.get();
        (until > now).then(|| Duration::from_nanos(until - now))
    }

    /// Takes a place for a history read; false when the tenant has all it may have here.
    pub fn start_history_read(&self) -> bool {
        let reads = self.history_reads.get();
        if self.max_history_reads != 0 && reads >= self.max_history_reads {
            return false;
        }
        self.history_reads.set(reads + 1);
        self.counters.history_reads.inc();
        true
    }

    /// Gives back the place of a history read that ended.
    pub fn end_history_read(&self) {
        self.history_reads
            .set(self.history_reads.get().saturating_sub(1));
    }

    pub fn max_history_reads(&self) -> u64 {
        self.max_history_reads
    }
}

/// Every compartment of one shard.
pub struct Lanes {
    /// The executor's default queue: the shard's own work.
    own: TaskQueueHandle,
    own_counters: Arc<LaneCounters>,
    handshake: TaskQueueHandle,
    handshake_counters: Arc<LaneCounters>,
    lanes: Vec<Rc<Lane>>,
    by_tenant: HashMap<Arc<str>, LaneId>,
}

impl Lanes {
    /// Makes the shard's task queues. Runs on the shard's executor, in its default queue.
    pub fn new(config: &Config, shards: usize, now_nanos: u64) -> Self {
        let tenancy = &config.tenancy;
        let executor = glommio::executor();
        let own = executor.current_task_queue();
        let own_counters = Arc::new(LaneCounters {
            tenant: None,
            queue: "shard".into(),
            ..Default::default()
        });
        let handshake = executor.create_task_queue(
            Shares::Static(tenancy.handshake_shares as usize),
            Latency::NotImportant,
            "handshake",
        );
        let handshake_counters = Arc::new(LaneCounters {
            tenant: None,
            queue: "handshake".into(),
            ..Default::default()
        });
        let lane = |id: usize, tenant: Arc<str>, shares: u64, class: TenantClass| {
            let latency = match class {
                TenantClass::Standard => Latency::NotImportant,
                TenantClass::Latency => {
                    Latency::Matters(Duration::from_micros(tenancy.latency_class_us))
                }
            };
            let queue_name = format!("tenant:{tenant}");
            let queue =
                executor.create_task_queue(Shares::Static(shares as usize), latency, &queue_name);
            let quota = config.tenants.get(id.wrapping_sub(1));
            Rc::new(Lane {
                id: id as LaneId,
                queue,
                buckets: quota.and_then(|q| RateBuckets::new(q, shards, now_nanos)),
                counters: Arc::new(LaneCounters {
                    tenant: Some(tenant),
                    queue: queue_name.into(),
                    ..Default::default()
                }),
                max_history_reads: quota.map_or(0, |q| q.max_history_reads_per_shard),
                history_reads: Cell::new(0),
                max_faults: tenancy.max_faults_per_sec,
                throttle_nanos: tenancy.throttle_ms.saturating_mul(1_000_000),
                window_start_nanos: Cell::new(0),
                faults_in_window: Cell::new(0),
            })
        };
        let mut lanes = vec![lane(
            0,
            "*".into(),
            tenancy.default_shares,
            TenantClass::Standard,
        )];
        let mut by_tenant = HashMap::new();
        for (i, t) in config.tenants.iter().enumerate() {
            let shares = if t.shares == 0 {
                tenancy.default_shares
            } else {
                t.shares
            };
            let name: Arc<str> = t.name.as_str().into();
            lanes.push(lane(i + 1, name.clone(), shares, t.class));
            by_tenant.insert(name, (i + 1) as LaneId);
        }
        Self {
            own,
            own_counters,
            handshake,
            handshake_counters,
            lanes,
            by_tenant,
        }
    }

    /// The queue of the shard's own work (the executor's default queue, where the shard
    /// started).
    pub fn own(&self) -> TaskQueueHandle {
        self.own
    }

    /// The queue connections run in until Hello settles their tenant.
    pub fn handshake(&self) -> TaskQueueHandle {
        self.handshake
    }

    /// The lane of `tenant`: its own, or the default lane when it has no `[[tenants]]` entry.
    pub fn for_tenant(&self, tenant: &str) -> &Rc<Lane> {
        let id = self.by_tenant.get(tenant).copied().unwrap_or(DEFAULT_LANE);
        &self.lanes[id as usize]
    }

    /// The lane `id` names (the default lane for an id this shard does not have, which lanes
    /// made from one configuration never produce).
    pub fn get(&self, id: LaneId) -> &Rc<Lane> {
        self.lanes
            .get(id as usize)
            .unwrap_or(&self.lanes[DEFAULT_LANE as usize])
    }

    /// Every queue of the shard with its counters: its own, the handshake queue, the lanes.
    fn queues(&self) -> impl Iterator<Item = (TaskQueueHandle, &Arc<LaneCounters>)> {
        [
            (self.own, &self.own_counters),
            (self.handshake, &self.handshake_counters),
        ]
        .into_iter()
        .chain(self.lanes.iter().map(|l| (l.queue, &l.counters)))
    }

    /// The counters of every queue (the shard's own first), for `/metrics`.
    pub fn counters(&self) -> Vec<Arc<LaneCounters>> {
        self.queues().map(|(_, c)| c.clone()).collect()
    }

    /// Starts a probe in every queue that samples how long the queue's ready work waits for
    /// its turn and takes its runtime from the executor. The probes hold their counters only,
    /// and end when the shard's executor does.
    pub fn start_probes(&self) {
        for (queue, counters) in self.queues() {
            let probe = glommio::spawn_local_into(probe(queue, counters.clone()), queue);
            match probe {
                Ok(task) => {
                    task.detach();
                }
                Err(e) => tracing::warn!(error = %e, "cannot start a task queue probe"),
            };
        }
    }
}

/// Sleeps [`PROBE_INTERVAL`] at a time in `queue` and records how late each wake-up ran: the
/// timer fired on time, so the rest is the wait for the queue's turn (and the reactor's).
async fn probe(queue: TaskQueueHandle, counters: Arc<LaneCounters>) {
    let mut turns = 0u32;
    loop {
        let due = Instant::now() + PROBE_INTERVAL;
        glommio::timer::sleep(PROBE_INTERVAL).await;
        let late = Instant::now().saturating_duration_since(due);
        counters.queue_delay.observe_nanos(late.as_nanos() as u64);
        turns += 1;
        if turns == RUNTIME_EVERY {
            turns = 0;
            if let Ok(stats) = glommio::executor().task_queue_stats(queue) {
                counters
                    .queue_runtime_nanos
                    .add(stats.runtime().as_nanos() as u64);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TenantQuota;

    fn config() -> Config {
        let mut config = Config::default();
        config.tenancy.max_faults_per_sec = 3;
        config.tenancy.throttle_ms = 500;
        config.tenants = vec![
            TenantQuota {
                name: "a".into(),
                shares: 50,
                max_history_reads_per_shard: 2,
                publish_pulses_per_sec: 10,
                ..Default::default()
            },
            TenantQuota {
                name: "b".into(),
                class: TenantClass::Latency,
                ..Default::default()
            },
        ];
        config
    }

    fn on_executor<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        glommio::LocalExecutorBuilder::default()
            .spawn(|| async move { f() })
            .unwrap()
            .join()
            .unwrap()
    }

    #[test]
    fn each_listed_tenant_has_its_own_queue_and_the_rest_share_one() {
        let (ids, queues, buckets) = on_executor(|| {
            let lanes = Lanes::new(&config(), 2, 0);
            let ids: Vec<LaneId> = ["a", "b", "c", "anonymous"]
                .iter()
                .map(|t| lanes.for_tenant(t).id)
                .collect();
            let queues = [
                lanes.handshake(),
                lanes.get(0).queue(),
                lanes.get(1).queue(),
            ]
            .iter()
            .map(|q| q.index())
            .collect::<std::collections::HashSet<_>>()
            .len();
            let buckets = (
                lanes.get(1).buckets.is_some(),
                lanes.get(2).buckets.is_some(),
            );
            (ids, queues, buckets)
        });
        assert_eq!(ids, [1, 2, 0, 0]);
        assert_eq!(queues, 3, "handshake, default and a's queues are distinct");
        assert_eq!(buckets, (true, false), "only a has a publish rate");
    }

    #[test]
    fn faults_past_the_limit_throttle_for_the_configured_time() {
        on_executor(|| {
            let lanes = Lanes::new(&config(), 1, 0);
            let a = lanes.for_tenant("a");
            let t0 = 10_000_000_000;
            assert!(!a.note_fault(t0));
            assert!(!a.note_fault(t0 + 1));
            assert!(!a.note_fault(t0 + 2), "three faults a second are allowed");
            assert!(a.throttled_for(t0 + 3).is_none());
            assert!(a.note_fault(t0 + 3), "the fourth starts a throttle");
            assert_eq!(a.throttled_for(t0 + 3), Some(Duration::from_millis(500)));
            assert!(
                !a.note_fault(t0 + 4),
                "already throttled: not started again"
            );
            assert_eq!(a.counters.throttles.get(), 1);
            assert_eq!(a.counters.faults.get(), 5);
            assert!(a.throttled_for(t0 + 3 + 500_000_000).is_none(), "it ends");
            // A new second starts a new window.
            let t1 = t0 + 2_000_000_000;
            assert!(!a.note_fault(t1));
            assert!(
                lanes.for_tenant("b").throttled_for(t0 + 3).is_none(),
                "b is not a"
            );
        });
    }

    #[test]
    fn history_reads_are_bounded_per_lane_and_given_back() {
        on_executor(|| {
            let lanes = Lanes::new(&config(), 1, 0);
            let a = lanes.for_tenant("a");
            assert!(a.start_history_read());
            assert!(a.start_history_read());
            assert!(!a.start_history_read(), "two in flight at most");
            a.end_history_read();
            assert!(a.start_history_read());
            let other = lanes.for_tenant("nobody");
            assert!((0..100).all(|_| other.start_history_read()), "no bound");
        });
    }
}
