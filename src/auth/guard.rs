//! Rate limit on failed authentication, per source address.
//!
//! Shared by every shard behind one mutex, touched only when a connection arrives while some
//! address is being tracked, and when an authentication fails: never on the data path. The map
//! is bounded (`auth.max_tracked_addresses`); past it the stalest entry is forgotten.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::AuthConfig;

#[derive(Debug, Clone, Copy)]
struct Entry {
    window_start: Instant,
    failures: u64,
    blocked_until: Option<Instant>,
}

#[derive(Debug)]
pub struct AuthGuard {
    entries: Mutex<HashMap<IpAddr, Entry>>,
    /// False while nothing is tracked, so the common connect path takes no lock.
    tracking: AtomicBool,
    max_failures: u64,
    window: Duration,
    block: Duration,
    max_tracked: usize,
}

impl AuthGuard {
    pub fn new(config: &AuthConfig) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            tracking: AtomicBool::new(false),
            max_failures: config.max_failures,
            window: Duration::from_millis(config.failure_window_ms),
            block: Duration::from_millis(config.block_ms),
            max_tracked: config.max_tracked_addresses as usize,
        }
    }

    /// True when connections from `ip` are refused for now.
    pub fn is_blocked(&self, ip: IpAddr) -> bool {
        if !self.tracking.load(Ordering::Relaxed) {
            return false;
        }
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        match entries.get(&ip) {
            Some(Entry {
                blocked_until: Some(until),
                ..
            }) if *until > now => true,
            Some(Entry {
                blocked_until: Some(_),
                ..
            }) => {
                entries.remove(&ip);
                self.tracking.store(!entries.is_empty(), Ordering::Relaxed);
                false
            }
            _ => false,
        }
    }

    /// Notes a failure from `ip`; returns true when it now blocks that address.
    pub fn record_failure(&self, ip: IpAddr) -> bool {
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if !entries.contains_key(&ip) && entries.len() >= self.max_tracked {
            let stalest = entries
                .iter()
                .min_by_key(|(_, e)| e.blocked_until.unwrap_or(e.window_start))
                .map(|(ip, _)| *ip);
            if let Some(old) = stalest {
                entries.remove(&old);
            }
        }
        let entry = entries.entry(ip).or_insert(Entry {
            window_start: now,
            failures: 0,
            blocked_until: None,
        });
        if now.duration_since(entry.window_start) > self.window {
            *entry = Entry {
                window_start: now,
                failures: 0,
                blocked_until: None,
            };
        }
        entry.failures += 1;
        let blocks = entry.failures >= self.max_failures && !self.block.is_zero();
        if blocks {
            entry.blocked_until = Some(now + self.block);
        }
        self.tracking.store(true, Ordering::Relaxed);
        blocks
    }

    pub fn tracked(&self) -> usize {
        self.entries.lock().map(|e| e.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(max_failures: u64, max_tracked: u64) -> AuthGuard {
        AuthGuard::new(&AuthConfig {
            max_failures,
            block_ms: 60_000,
            max_tracked_addresses: max_tracked,
            ..AuthConfig::default()
        })
    }

    #[test]
    fn blocks_after_the_threshold_and_only_that_address() {
        let g = guard(3, 100);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        assert!(!g.record_failure(a));
        assert!(!g.record_failure(a));
        assert!(!g.is_blocked(a));
        assert!(g.record_failure(a));
        assert!(g.is_blocked(a));
        assert!(!g.is_blocked(b));
    }

    #[test]
    fn the_map_stays_bounded() {
        let g = guard(3, 10);
        for i in 0..1000u32 {
            g.record_failure(IpAddr::from(i.to_be_bytes()));
        }
        assert!(g.tracked() <= 10);
    }
}
