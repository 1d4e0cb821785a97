//! What the outside world may ask about a running server: its phase (starting, ready,
//! stopping), its counters, and whether every shard's reactor is still turning.
//!
//! A [`Status`] exists before the server does, so the admin listener can answer `/healthz` and
//! `/readyz` (not ready) while start-up runs; [`crate::Server`] attaches its shards to it only
//! once every listener is bound and every shard accepts.

use crate::operator::CompiledOperator;
use crate::policy::Registry;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::metrics::{ShardCounters, Snapshot};

/// Where a server is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Binding listeners, starting shards, recovering retained realities.
    Starting,
    /// Every listener is bound and every shard accepts.
    Ready,
    /// Shutdown has begun: no new connections, queues draining.
    Stopping,
}

/// What a started server hands its [`Status`].
struct Attached {
    counters: Vec<Arc<ShardCounters>>,
    stop: Arc<AtomicBool>,
    listen: SocketAddr,
    failures: Arc<ShardFailures>,
}

/// Which shards have failed (their executor panicked), shared by the shards' threads, the
/// server and the admin listener.
///
/// A shard's thread marks itself failed while it unwinds (see [`FailureGuard`]) and raises the
/// server's stop flag: the other shards drain and the process exits with an error, so the
/// service manager restarts it. Until then `/readyz` and `/healthz` name the failed shard, and
/// the other shards answer requests for its realities with an error instead of leaving them
/// waiting.
#[derive(Debug)]
pub struct ShardFailures {
    failed: Box<[AtomicBool]>,
    /// Fault seam: shards asked to panic on their next heartbeat (tests only).
    injected: Box<[AtomicBool]>,
}

impl ShardFailures {
    pub fn new(shards: usize) -> Arc<Self> {
        let flags = || (0..shards).map(|_| AtomicBool::new(false)).collect();
        Arc::new(Self {
            failed: flags(),
            injected: flags(),
        })
    }

    /// Has `shard` failed?
    pub fn is_failed(&self, shard: usize) -> bool {
        self.failed
            .get(shard)
            .is_some_and(|f| f.load(Ordering::Acquire))
    }

    /// The shards that have failed, in order.
    pub fn failed(&self) -> Vec<usize> {
        (0..self.failed.len())
            .filter(|&s| self.is_failed(s))
            .collect()
    }

    fn mark(&self, shard: usize) {
        if let Some(f) = self.failed.get(shard) {
            f.store(true, Ordering::Release);
        }
    }

    /// Asks `shard` to panic, from a task of its own, on its next heartbeat: how the tests make
    /// the bug this type exists for.
    pub fn inject_panic(&self, shard: usize) {
        if let Some(f) = self.injected.get(shard) {
            f.store(true, Ordering::Release);
        }
    }

    /// Read (and cleared) by the shard's heartbeat.
    pub fn take_injected(&self, shard: usize) -> bool {
        self.injected
            .get(shard)
            .is_some_and(|f| f.swap(false, Ordering::AcqRel))
    }
}

/// Held by a shard's thread for as long as its executor runs. Dropped while the thread unwinds
/// from a panic, it marks the shard failed and raises the server's stop flag.
pub struct FailureGuard {
    shard: usize,
    failures: Arc<ShardFailures>,
    stop: Arc<AtomicBool>,
}

impl FailureGuard {
    pub fn new(shard: usize, failures: Arc<ShardFailures>, stop: Arc<AtomicBool>) -> Self {
        Self {
            shard,
            failures,
            stop,
        }
    }
}

impl Drop for FailureGuard {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        self.failures.mark(self.shard);
        self.stop.store(true, Ordering::Release);
        tracing::error!(
            shard = self.shard,
            "shard panicked: its connections are gone and requests for its realities are \
             refused; stopping the bus so the service manager restarts it"
        );
    }
}

/// The shared, thread-safe view of one server. Read by the admin listener and the systemd
/// watchdog; written once by [`crate::Server`] when start-up completes.
pub struct Status {
    attached: OnceLock<Attached>,
    started: SystemTime,
    /// Retained realities given a series of their own on `/metrics`.
    reality_series: AtomicUsize,
    /// The loaded hosted operators, for `/operators`.
    operators: OnceLock<Arc<Registry<CompiledOperator>>>,
    /// The shield, whose circuits `/circuits` shows.
    shield: OnceLock<Arc<crate::shield::Shield>>,
}

impl Status {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            attached: OnceLock::new(),
            started: SystemTime::now(),
            reality_series: AtomicUsize::new(crate::config::DEFAULT_METRICS_MAX_REALITIES as usize),
            operators: OnceLock::new(),
            shield: OnceLock::new(),
        })
    }

    /// Where `/operators` reads the loaded operators from.
    pub(crate) fn set_operators(&self, registry: Arc<Registry<CompiledOperator>>) {
        let _ = self.operators.set(registry);
    }

    /// Where `/circuits` reads the circuits and who is online from.
    pub(crate) fn set_shield(&self, shield: Arc<crate::shield::Shield>) {
        let _ = self.shield.set(shield);
    }

    /// The installed circuits: stages with how many sessions (or a hosted operator) serve each,
    /// edges with their types and counters, and whether every stage is online.
    pub fn circuits_json(&self) -> serde_json::Value {
        let Some(shield) = self.shield.get() else {
            return serde_json::json!([]);
        };
        let hosted = |name: &str| self.operators.get().is_some_and(|r| r.get(name).is_some());
        shield.circuits.describe(&hosted)
    }

    /// The loaded operators: name, module SHA-256 and size, bindings, limits and parameters.
    pub fn operators_json(&self) -> serde_json::Value {
        let Some(registry) = self.operators.get() else {
            return serde_json::json!([]);
        };
        let (_, catalog) = registry.snapshot();
        catalog
            .iter()
            .map(|op| {
                serde_json::json!({
                    "name": &*op.spec.name,
                    "sha256": op.sha256_hex(),
                    "wasm_bytes": op.wasm_bytes,
                    "spec": op.spec.describe(),
                })
            })
            .collect()
    }

    /// How many retained realities (the largest) get a series of their own on `/metrics`
    /// (`storage.metrics_max_realities`).
    pub fn set_reality_series(&self, n: usize) {
        self.reality_series.store(n, Ordering::Relaxed);
    }

    pub fn reality_series(&self) -> usize {
        self.reality_series.load(Ordering::Relaxed)
    }

    /// Marks the server ready. Called by the server once, at the end of a successful start; a
    /// second call (a second server on the same status) is ignored.
    pub(crate) fn attach(
        &self,
        counters: Vec<Arc<ShardCounters>>,
        stop: Arc<AtomicBool>,
        listen: SocketAddr,
        failures: Arc<ShardFailures>,
    ) {
        let fresh = self
            .attached
            .set(Attached {
                counters,
                stop,
                listen,
                failures,
            })
            .is_ok();
        debug_assert!(fresh, "a Status serves one server");
    }

    pub fn phase(&self) -> Phase {
        match self.attached.get() {
            None => Phase::Starting,
            Some(a) if a.stop.load(Ordering::Acquire) => Phase::Stopping,
            Some(_) => Phase::Ready,
        }
    }

    pub fn is_ready(&self) -> bool {
        self.phase() == Phase::Ready
    }

    /// The shards whose executor panicked (empty before start-up completes).
    pub fn failed_shards(&self) -> Vec<usize> {
        self.attached
            .get()
            .map_or_else(Vec::new, |a| a.failures.failed())
    }

    /// The client listener's address, once ready.
    pub fn listen_addr(&self) -> Option<SocketAddr> {
        self.attached.get().map(|a| a.listen)
    }

    /// Shards running (0 before start-up completes).
    pub fn shard_count(&self) -> usize {
        self.attached.get().map_or(0, |a| a.counters.len())
    }

    /// Counters summed over shards (all zero before start-up completes).
    pub fn snapshot(&self) -> Snapshot {
        match self.attached.get() {
            Some(a) => Snapshot::sum(a.counters.iter().map(|c| &**c)),
            None => Snapshot::default(),
        }
    }

    /// Each shard's heartbeat (empty before start-up completes).
    pub fn heartbeats(&self) -> Vec<u64> {
        self.attached.get().map_or_else(Vec::new, |a| {
            a.counters.iter().map(|c| c.heartbeat.get()).collect()
        })
    }

    /// When this status (and so the process's server) was created, in Unix seconds.
    pub fn started_unix_seconds(&self) -> f64 {
        self.started
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64())
    }
}

/// Tracks shard heartbeats between samples, to tell a turning reactor from a stuck one.
#[derive(Debug, Default)]
pub struct Liveness {
    /// Per shard: the last heartbeat seen and when it last changed.
    seen: Vec<(u64, Instant)>,
}

impl Liveness {
    /// Records a sample. Returns true when every shard's heartbeat advanced since the previous
    /// sample (false on the first sample, and when there are no shards yet).
    pub fn observe(&mut self, heartbeats: &[u64], now: Instant) -> bool {
        if self.seen.len() != heartbeats.len() {
            self.seen = heartbeats.iter().map(|&h| (h, now)).collect();
            return false;
        }
        let mut all = !heartbeats.is_empty();
        for ((last, changed), &h) in self.seen.iter_mut().zip(heartbeats) {
            if h != *last {
                *last = h;
                *changed = now;
            } else {
                all = false;
            }
        }
        all
    }

    /// Shards whose heartbeat has not changed for longer than `max_still`, as of `now`.
    pub fn stalled(&self, now: Instant, max_still: Duration) -> Vec<usize> {
        self.seen
            .iter()
            .enumerate()
            .filter(|(_, (_, changed))| now.saturating_duration_since(*changed) > max_still)
            .map(|(shard, _)| shard)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phase_follows_attach_and_stop() {
        let status = Status::new();
        assert_eq!(status.phase(), Phase::Starting);
        assert_eq!(status.snapshot(), Snapshot::default());
        assert!(status.heartbeats().is_empty());
        let stop = Arc::new(AtomicBool::new(false));
        let counters = vec![Arc::new(ShardCounters::default())];
        counters[0].heartbeat.add(5);
        let failures = ShardFailures::new(1);
        status.attach(
            counters,
            stop.clone(),
            "127.0.0.1:1".parse().unwrap(),
            failures.clone(),
        );
        assert_eq!(status.phase(), Phase::Ready);
        assert!(status.failed_shards().is_empty());
        assert_eq!(status.heartbeats(), vec![5]);
        stop.store(true, Ordering::Release);
        assert_eq!(status.phase(), Phase::Stopping);
    }

    #[test]
    fn a_panicking_thread_marks_its_shard_failed_and_raises_stop() {
        let failures = ShardFailures::new(2);
        let stop = Arc::new(AtomicBool::new(false));
        // A guard dropped normally (a shard that stopped) marks nothing.
        drop(FailureGuard::new(0, failures.clone(), stop.clone()));
        assert!(failures.failed().is_empty());
        assert!(!stop.load(Ordering::Acquire));
        let (f, s) = (failures.clone(), stop.clone());
        let joined = std::thread::spawn(move || {
            let _guard = FailureGuard::new(1, f, s);
            panic!("a bug in a handler");
        })
        .join();
        assert!(joined.is_err());
        assert_eq!(failures.failed(), vec![1]);
        assert!(stop.load(Ordering::Acquire));
        assert!(!failures.take_injected(1));
        failures.inject_panic(1);
        assert!(failures.take_injected(1));
        assert!(!failures.take_injected(1), "read once");
    }

    #[test]
    fn liveness_needs_every_shard_to_advance() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut l = Liveness::default();
        assert!(!l.observe(&[1, 1], ms(0)), "first sample proves nothing");
        assert!(l.observe(&[2, 3], ms(100)));
        assert!(!l.observe(&[3, 3], ms(200)), "shard 1 did not move");
        assert_eq!(l.stalled(ms(200), Duration::from_millis(50)), vec![1]);
        assert!(l.stalled(ms(200), Duration::from_millis(150)).is_empty());
        assert!(l.observe(&[4, 4], ms(300)));
        assert!(l.stalled(ms(300), Duration::from_millis(50)).is_empty());
        assert!(!Liveness::default().observe(&[], ms(0)));
    }
}
