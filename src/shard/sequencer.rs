//! The realities a shard owns: their next sequence, last timestamp, and which shards want them.
//!
//! Entries are bounded by `limits.max_realities_per_shard`. When a new reality would pass the
//! bound, an idle entry is forgotten to make room: one no shard subscribes to, not used since
//! the eviction hand last passed it (second chance), and one the shard says it may forget (an
//! ephemeral reality with no state hanging off it; see `Shard::may_forget`). A forgotten
//! reality's sequence starts again at 1 when it is next used. That is safe only because nobody
//! is there to see it: no subscriber (a subscription keeps its entry), nothing retained (a
//! retained reality's entry is never forgotten, so its sequences never repeat).

use std::collections::{HashMap, VecDeque};
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
    /// Used (stamped, subscribed) since the eviction hand last passed: a second chance.
    used: bool,
}

impl OwnedReality {
    fn idle(&self) -> bool {
        self.interest.iter().all(|n| *n == 0)
    }
}

/// The owner-side state of every reality that hashes to this shard.
#[derive(Debug)]
pub struct Sequencer {
    shards: usize,
    max_realities: usize,
    realities: HashMap<Arc<str>, OwnedReality>,
    /// Every entry's name once, in the order the eviction hand visits them.
    hand: VecDeque<Arc<str>>,
    /// The last sweep found nothing to forget; no sweep runs again until some entry loses its
    /// last subscriber, so a bus full of live realities refuses a new one in O(1).
    barren: bool,
    /// Entries forgotten so far (the shard turns it into a counter).
    evicted: u64,
}

impl Sequencer {
    pub fn new(shards: usize, max_realities: usize) -> Self {
        Self {
            shards,
            max_realities,
            realities: HashMap::new(),
            hand: VecDeque::new(),
            barren: false,
            evicted: 0,
        }
    }

    /// The entry of `reality`, made (forgetting an idle one if the bound is reached) when it
    /// has none. `forget` is asked before an idle entry is forgotten: true forgets it, false keeps it.
    fn entry(
        &mut self,
        reality: &str,
        forget: &dyn Fn(&str) -> bool,
    ) -> Result<&mut OwnedReality, SequenceError> {
        if !self.realities.contains_key(reality) {
            if self.realities.len() >= self.max_realities && !self.forget_one(forget) {
                return Err(SequenceError::TooManyRealities {
                    max: self.max_realities,
                });
            }
            let name: Arc<str> = Arc::from(reality);
            self.hand.push_back(name.clone());
            self.realities.insert(
                name.clone(),
                OwnedReality {
                    name,
                    next_sequence: 1,
                    last_timestamp_unix_nanos: 0,
                    interest: vec![0; self.shards].into_boxed_slice(),
                    used: true,
                },
            );
        }
        let r = self
            .realities
            .get_mut(reality)
            .expect("inserted just above");
        r.used = true;
        Ok(r)
    }

    /// Forgets one idle entry the shard may forget, the least recently used first (as a clock
    /// hand: each idle entry used since the hand last passed is spared once). False when there
    /// is none; then no sweep runs until some entry loses its last subscriber.
    fn forget_one(&mut self, forget: &dyn Fn(&str) -> bool) -> bool {
        if self.barren {
            return false;
        }
        // Twice round: the first pass may only take away second chances.
        for _ in 0..2 * self.hand.len() {
            let Some(name) = self.hand.pop_front() else {
                break;
            };
            let Some(r) = self.realities.get_mut(&name) else {
                continue;
            };
            if r.idle() && !r.used && forget(&name) {
                self.realities.remove(&name);
                self.evicted += 1;
                return true;
            }
            if r.idle() {
                r.used = false;
            }
            self.hand.push_back(name);
        }
        self.barren = true;
        false
    }

    /// Entries forgotten to make room since start.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// Sets where a recovered reality goes on: sequences never restart or repeat.
    pub fn restore(
        &mut self,
        reality: &str,
        next_sequence: u64,
        last_timestamp_unix_nanos: u64,
        forget: &dyn Fn(&str) -> bool,
    ) {
        if let Ok(r) = self.entry(reality, forget) {
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
    pub fn stamp(
        &mut self,
        reality: &str,
        now_unix_nanos: u64,
        forget: &dyn Fn(&str) -> bool,
    ) -> Result<Stamp, SequenceError> {
        let r = self.entry(reality, forget)?;
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
        forget: &dyn Fn(&str) -> bool,
    ) -> Result<u64, SequenceError> {
        if !add && !self.realities.contains_key(reality) {
            return Ok(1);
        }
        let r = self.entry(reality, forget)?;
        let slot = &mut r.interest[shard];
        if add {
            *slot += 1;
        } else {
            debug_assert!(*slot > 0, "interest removed more often than added");
            *slot = slot.saturating_sub(1);
        }
        let (next, idle) = (r.next_sequence, r.idle());
        if idle {
            // It may be forgotten now: a sweep is worth running again.
            self.barren = false;
        }
        Ok(next)
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

    fn any(_: &str) -> bool {
        true
    }

    #[test]
    fn sequences_are_gapless_and_timestamps_monotonic() {
        let mut s = Sequencer::new(2, 10);
        let a = s.stamp("r", 100, &any).unwrap();
        let b = s.stamp("r", 50, &any).unwrap(); // the clock stepped back
        let c = s.stamp("other", 10, &any).unwrap();
        assert_eq!((a.sequence, b.sequence, c.sequence), (1, 2, 1));
        assert_eq!(b.timestamp_unix_nanos, 100);
        assert_eq!(c.timestamp_unix_nanos, 10);
    }

    #[test]
    fn interest_reports_next_sequence() {
        let mut s = Sequencer::new(2, 10);
        assert_eq!(s.change_interest("r", 1, true, &any).unwrap(), 1);
        s.stamp("r", 1, &any).unwrap();
        assert_eq!(s.change_interest("r", 1, true, &any).unwrap(), 2);
        assert_eq!(s.interest("r").unwrap(), &[0, 2]);
        s.change_interest("r", 1, false, &any).unwrap();
        assert_eq!(s.interest("r").unwrap(), &[0, 1]);
    }

    #[test]
    fn reality_count_is_bounded_when_nothing_may_be_forgotten() {
        let mut s = Sequencer::new(1, 1);
        s.stamp("a", 1, &any).unwrap();
        assert_eq!(
            s.stamp("b", 1, &|_| false).unwrap_err(),
            SequenceError::TooManyRealities { max: 1 }
        );
        assert_eq!(s.stamp("a", 1, &any).unwrap().sequence, 2);
    }

    #[test]
    fn idle_realities_make_room_and_subscribed_or_kept_ones_do_not() {
        let mut s = Sequencer::new(1, 3);
        let keep = |r: &str| r != "kept";
        s.change_interest("watched", 0, true, &keep).unwrap();
        s.stamp("watched", 1, &keep).unwrap();
        s.stamp("kept", 1, &keep).unwrap();
        for i in 0..1000 {
            let stamp = s.stamp(&format!("tmp-{i}"), 1, &keep).unwrap();
            assert_eq!(stamp.sequence, 1);
            assert_eq!(s.len(), 3);
        }
        assert_eq!(s.evicted(), 999);
        assert_eq!(s.stamp("watched", 1, &keep).unwrap().sequence, 2);
        assert_eq!(s.stamp("kept", 1, &keep).unwrap().sequence, 2);
    }

    #[test]
    fn a_recently_used_reality_gets_a_second_chance() {
        let mut s = Sequencer::new(1, 2);
        s.stamp("a", 1, &any).unwrap();
        s.stamp("b", 1, &any).unwrap();
        // The hand passes both once (spares them), then takes `a`, the first it meets again.
        s.stamp("c", 1, &any).unwrap();
        assert!(s.interest("a").is_none() && s.interest("b").is_some());
        // `b` was spared and not used since; `c` is new (used): `b` goes.
        s.stamp("d", 1, &any).unwrap();
        assert!(s.interest("b").is_none() && s.interest("c").is_some());
    }

    #[test]
    fn a_full_sequencer_of_subscribed_realities_stops_sweeping_until_one_is_left() {
        let mut s = Sequencer::new(1, 2);
        s.change_interest("a", 0, true, &any).unwrap();
        s.change_interest("b", 0, true, &any).unwrap();
        assert!(s.stamp("c", 1, &any).is_err());
        assert!(s.barren);
        s.change_interest("a", 0, false, &any).unwrap();
        assert!(!s.barren);
        assert_eq!(s.stamp("c", 1, &any).unwrap().sequence, 1);
        assert!(s.interest("a").is_none());
    }
}
