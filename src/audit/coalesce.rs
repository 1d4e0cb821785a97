//! Refusals that need no record each: gathered into at most one audit record per window.
//!
//! A session that is not a controller and sends `sys.control.*` changes nothing, so its refusal
//! needs evidence, not a record per attempt: one fsynced record per pulse let any anonymous
//! client turn a flood of pulses into a flood of disk writes. A [`Coalescer`] (one per shard)
//! counts refusals and hands out a [`Digest`] when a record is due: for the first refusal, and
//! then for the first refusal after `window_nanos` has passed since the last record, covering
//! every refusal since. What is left when the shard stops is handed out by [`Coalescer::flush`].
//! A digest names at most [`MAX_PEERS`] peers and [`MAX_TOPICS`] topics, so its size does not
//! depend on the flood.

/// Distinct peers a digest names; more are only counted.
pub const MAX_PEERS: usize = 8;
/// Distinct topics a digest names; more are only counted.
pub const MAX_TOPICS: usize = 4;

/// The refusals one record covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digest {
    pub refused: u64,
    pub first_unix_nanos: u64,
    pub last_unix_nanos: u64,
    /// Up to [`MAX_PEERS`] distinct peers, in the order first seen.
    pub peers: Vec<String>,
    /// Refusals from peers not in `peers`.
    pub other_peers_refused: u64,
    pub topics: Vec<String>,
    pub other_topics_refused: u64,
}

impl Digest {
    fn new(now: u64) -> Self {
        Self {
            refused: 0,
            first_unix_nanos: now,
            last_unix_nanos: now,
            peers: Vec::new(),
            other_peers_refused: 0,
            topics: Vec::new(),
            other_topics_refused: 0,
        }
    }

    fn add(&mut self, now: u64, peer: &str, topic: &str) {
        self.refused += 1;
        self.last_unix_nanos = now;
        if !note(&mut self.peers, peer, MAX_PEERS) {
            self.other_peers_refused += 1;
        }
        if !note(&mut self.topics, topic, MAX_TOPICS) {
            self.other_topics_refused += 1;
        }
    }
}

/// Adds `item` to `list` when it is there or there is room; false when it was only counted.
fn note(list: &mut Vec<String>, item: &str, max: usize) -> bool {
    if list.iter().any(|i| i == item) {
        return true;
    }
    if list.len() < max {
        list.push(item.to_owned());
        return true;
    }
    false
}

/// Counts refusals and says when one record of them is due.
#[derive(Debug)]
pub struct Coalescer {
    window_nanos: u64,
    last_record_unix_nanos: Option<u64>,
    pending: Option<Digest>,
}

impl Coalescer {
    pub fn new(window_nanos: u64) -> Self {
        Self {
            window_nanos,
            last_record_unix_nanos: None,
            pending: None,
        }
    }

    /// Counts one refusal; `Some` when a record of everything pending is due now.
    pub fn refused(&mut self, now_unix_nanos: u64, peer: &str, topic: &str) -> Option<Digest> {
        self.pending
            .get_or_insert_with(|| Digest::new(now_unix_nanos))
            .add(now_unix_nanos, peer, topic);
        let due = match self.last_record_unix_nanos {
            None => true,
            Some(last) => now_unix_nanos.saturating_sub(last) >= self.window_nanos,
        };
        if !due {
            return None;
        }
        self.last_record_unix_nanos = Some(now_unix_nanos);
        self.pending.take()
    }

    /// Whatever is pending (at shutdown).
    pub fn flush(&mut self) -> Option<Digest> {
        self.pending.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    #[test]
    fn first_refusal_is_recorded_then_one_record_per_window() {
        let mut c = Coalescer::new(10 * SEC);
        let first = c.refused(SEC, "1.2.3.4:5", "sys.control.x").unwrap();
        assert_eq!(first.refused, 1);
        for i in 0..999 {
            assert_eq!(c.refused(SEC + i, "1.2.3.4:5", "sys.control.x"), None);
        }
        let next = c.refused(11 * SEC, "1.2.3.4:6", "sys.control.y").unwrap();
        assert_eq!(next.refused, 1000);
        assert_eq!(next.first_unix_nanos, SEC);
        assert_eq!(next.peers, vec!["1.2.3.4:5", "1.2.3.4:6"]);
        assert_eq!(c.flush(), None);
        assert_eq!(c.refused(12 * SEC, "p", "t"), None);
        assert_eq!(c.flush().unwrap().refused, 1);
    }

    #[test]
    fn a_digest_names_a_bounded_number_of_peers_and_topics() {
        let mut c = Coalescer::new(SEC);
        c.refused(0, "seed", "seed");
        for i in 0..100 {
            c.refused(1, &format!("peer-{i}"), &format!("topic-{i}"));
        }
        let d = c.flush().unwrap();
        assert_eq!(d.refused, 100);
        assert_eq!(d.peers.len(), MAX_PEERS);
        assert_eq!(d.other_peers_refused, 100 - MAX_PEERS as u64);
        assert_eq!(d.topics.len(), MAX_TOPICS);
        assert_eq!(d.other_topics_refused, 100 - MAX_TOPICS as u64);
    }
}
