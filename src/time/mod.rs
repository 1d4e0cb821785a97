//! The one clock seam. Everything that stamps or compares wall-clock time goes through a
//! [`Clock`], so tests can control time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// A source of UTC wall-clock time in nanoseconds since the Unix epoch.
pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now_unix_nanos(&self) -> u64;
}

/// The system's real-time clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_unix_nanos(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
    }
}

/// A clock that only moves when told to; for tests.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    pub fn new(start_unix_nanos: u64) -> Arc<Self> {
        Arc::new(Self(AtomicU64::new(start_unix_nanos)))
    }

    pub fn set(&self, unix_nanos: u64) {
        self.0.store(unix_nanos, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_unix_nanos(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// The shared handle every shard holds.
pub type SharedClock = Arc<dyn Clock>;

/// The default clock: the system's.
pub fn system() -> SharedClock {
    Arc::new(SystemClock)
}
