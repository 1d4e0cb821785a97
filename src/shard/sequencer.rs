//! The realities a shard owns: their next sequence, last timestamp, and which shards want them.

use std::collections::HashMap;
use std::sync::Arc;

/// Why the owner refused to sequence.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SequenceError {
    #[error("this shard already sequences {max} realities (limits.max_realities_per_shard)")]
    TooManyRealities { max: usize },
}

/// What the owner stamped on one pulse.
#[derive(Debug, Clone)]
pub struct Stamp {
    pub reality: Arc<str>,
    pub sequence: u64,
    pub timestamp_unix_nanos: u64,
}

#[derive(Debug)]
struct OwnedReality {
    name: Arc<str>,
    next_sequence: u64,
    last_timestamp_unix_nanos: u64,
    /// Subscriptions per shard that want this reality's pulses.
    interest: Box<[u32]>,
}

/// The owner-side state of every reality that hashes to this shard.
#[derive(Debug)]
pub struct Sequencer {
    shards: usize,
    max_realities: usize,
    realities: HashMap<Arc<str>, OwnedReality>,
}

impl Sequencer {
    pub fn new(shards: usize, max_realities: usize) -> Self {
        Self {
            shards,
            max_realities,
            realities: HashMap::new(),
        }
    }

    fn entry(&mut self, reality: &str) -> Result<&mut OwnedReality, SequenceError> {
        if !self.realities.contains_key(reality) {
            if self.realities.len() >= self.max_realities {
                return Err(SequenceError::TooManyRealities {
                    max: self.max_realities,
                });
            }
            let name: Arc<str> = Arc::from(reality);
            self.realities.insert(
                name.clone(),
                OwnedReality {
                    name,
                    next_sequence: 1,
                    last_timestamp_unix_nanos: 0,
                    interest: vec![0; self.shards].into_boxed_slice(),
                },
            );
        }
        Ok(self
            .realities
            .get_mut(reality)
            .expect("inserted just above"))
    }

    /// Sets where a recovered reality goes on: sequences never restart or repeat.
    pub fn restore(&mut self, reality: &str, next_sequence: u64, last_timestamp_unix_nanos: u64) {
        if let Ok(r) = self.entry(reality) {
            r.next_sequence = next_sequence;
            r.last_timestamp_unix_nanos = last_timestamp_unix_nanos;
        }
    }

    /// True when `reality` has never been given a sequence (a fork may be imported into it).
    pub fn is_unused(&self, reality: &str) -> bool {
        self.realities
            .get(reality)
            .is_none_or(|r| r.next_sequence == 1)
    }

    /// Which shards have subscribers for `reality` (counts per shard), if it exists.
    pub fn interest(&self, reality: &str) -> Option<&[u32]> {
        self.realities.get(reality).map(|r| &*r.interest)
    }

    /// Gives the next pulse of `reality` its sequence and timestamp. The sequence is strictly
    /// increasing from 1 with no gaps; the timestamp never goes below the previous one even if
    /// the wall clock steps back.
    pub fn stamp(&mut self, reality: &str, now_unix_nanos: u64) -> Result<Stamp, SequenceError> {
        let r = self.entry(reality)?;
        let sequence = r.next_sequence;
        r.next_sequence += 1;
        let timestamp = now_unix_nanos.max(r.last_timestamp_unix_nanos);
        r.last_timestamp_unix_nanos = timestamp;
        Ok(Stamp {
            reality: r.name.clone(),
            sequence,
            timestamp_unix_nanos: timestamp,
        })
    }

    /// Adds (or removes) one subscription of `shard` to `reality`. Returns the sequence the
    /// next pulse will get: with FIFO rings, every pulse from it on reaches `shard`.
    pub fn change_interest(
        &mut self,
        reality: &str,
        shard: usize,
        add: bool,
    ) -> Result<u64, SequenceError> {
        if !add && !self.realities.contains_key(reality) {
            return Ok(1);
        }
        let r = self.entry(reality)?;
        let slot = &mut r.interest[shard];
        if add {
            *slot += 1;
        } else {
            debug_assert!(*slot > 0, "interest removed more often than added");
            *slot = slot.saturating_sub(1);
        }
        Ok(r.next_sequence)
    }

    pub fn len(&self) -> usize {
        self.realities.len()
    }

    pub fn is_empty(&self) -> bool {
        self.realities.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequences_are_gapless_and_timestamps_monotonic() {
        let mut s = Sequencer::new(2, 10);
        let a = s.stamp("r", 100).unwrap();
        let b = s.stamp("r", 50).unwrap(); // the clock stepped back
        let c = s.stamp("other", 10).unwrap();
        assert_eq!((a.sequence, b.sequence, c.sequence), (1, 2, 1));
        assert_eq!(b.timestamp_unix_nanos, 100);
        assert_eq!(c.timestamp_unix_nanos, 10);
    }

    #[test]
    fn interest_reports_next_sequence() {
        let mut s = Sequencer::new(2, 10);
        assert_eq!(s.change_interest("r", 1, true).unwrap(), 1);
        s.stamp("r", 1).unwrap();
        assert_eq!(s.change_interest("r", 1, true).unwrap(), 2);
        assert_eq!(s.interest("r").unwrap(), &[0, 2]);
        s.change_interest("r", 1, false).unwrap();
        assert_eq!(s.interest("r").unwrap(), &[0, 1]);
    }

    #[test]
    fn reality_count_is_bounded() {
        let mut s = Sequencer::new(1, 1);
        s.stamp("a", 1).unwrap();
        assert_eq!(
            s.stamp("b", 1).unwrap_err(),
            SequenceError::TooManyRealities { max: 1 }
        );
        assert_eq!(s.stamp("a", 1).unwrap().sequence, 2);
    }
}
