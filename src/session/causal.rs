//! Causal delivery for one connection.
//!
//! A pulse carries its producer's vector clock (`causal`: reality → highest sequence seen).
//! For a subscription with `causal = true`, a pulse is delivered only once every pulse it
//! depends on — in realities this connection also subscribes to — has been delivered (or passed
//! by, when no subscription of this connection wanted it). Pulses of one reality keep their
//! order: once one is held, later ones of the same reality wait behind it. The hold buffer is
//! bounded; overflowing it is an error for the subscription, never a silent reorder.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use crate::shard::Pulse;

/// A pulse waiting for its dependencies.
struct Held {
    subscription_id: u64,
    pulse: Arc<Pulse>,
}

/// The hold buffer overflowed for this subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overflow {
    pub subscription_id: u64,
}

pub struct CausalGate {
    /// Highest sequence of each reality that reached this connection's subscriptions.
    seen: HashMap<Arc<str>, u64>,
    held: VecDeque<Held>,
    max_held: usize,
}

impl CausalGate {
    pub fn new(max_held: usize) -> Self {
        Self {
            seen: HashMap::new(),
            held: VecDeque::new(),
            max_held,
        }
    }

    #[cfg(test)]
    fn held(&self) -> usize {
        self.held.len()
    }

    /// Everything of `reality` up to this sequence has been delivered or passed by.
    fn progress(&self, reality: &str) -> u64 {
        let first_held = self
            .held
            .iter()
            .filter(|h| &*h.pulse.reality == reality)
            .map(|h| h.pulse.sequence)
            .min();
        match first_held {
            Some(seq) => seq - 1,
            None => self.seen.get(reality).copied().unwrap_or(0),
        }
    }

    /// Are all of `pulse`'s dependencies delivered? `start_of(r)` is the first sequence this
    /// connection's subscriptions to `r` deliver (None when it has none): dependencies before
    /// it are history the subscriber did not ask for.
    fn ready(&self, pulse: &Pulse, start_of: &impl Fn(&str) -> Option<u64>) -> bool {
        pulse
            .deps
            .iter()
            .all(|(reality, seq)| match start_of(reality) {
                None => true,
                Some(start) => *seq < start || self.progress(reality) >= *seq,
            })
    }

    /// A pulse reached a causal subscription that wants it. Delivers it at once when it can,
    /// else holds it.
    pub fn arrive(
        &mut self,
        subscription_id: u64,
        pulse: &Arc<Pulse>,
        start_of: &impl Fn(&str) -> Option<u64>,
        deliver: &mut impl FnMut(u64, &Arc<Pulse>),
    ) -> Result<(), Overflow> {
        let behind_same_reality = self.held.iter().any(|h| h.pulse.reality == pulse.reality);
        if !behind_same_reality && self.ready(pulse, start_of) {
            deliver(subscription_id, pulse);
            return Ok(());
        }
        if self.held.len() >= self.max_held {
            return Err(Overflow { subscription_id });
        }
        self.held.push_back(Held {
            subscription_id,
            pulse: pulse.clone(),
        });
        Ok(())
    }

    /// A pulse of `reality` passed this connection (delivered, held or not wanted).
    pub fn note_seen(&mut self, reality: &Arc<str>, sequence: u64) {
        let entry = self.seen.entry(reality.clone()).or_insert(0);
        *entry = (*entry).max(sequence);
    }

    /// Delivers every held pulse whose dependencies are now met, keeping each reality's order.
    pub fn release(
        &mut self,
        start_of: &impl Fn(&str) -> Option<u64>,
        deliver: &mut impl FnMut(u64, &Arc<Pulse>),
    ) {
        loop {
            let mut blocked: Vec<Arc<str>> = Vec::new();
            let mut released = None;
            for (i, h) in self.held.iter().enumerate() {
                if blocked.contains(&h.pulse.reality) {
                    continue;
                }
                // A pulse never depends on its own reality, so holding it does not affect
                // its own readiness.
                if self.ready(&h.pulse, start_of) {
                    released = Some(i);
                    break;
                }
                blocked.push(h.pulse.reality.clone());
            }
            let Some(i) = released else { return };
            let h = self.held.remove(i).expect("index from iteration");
            deliver(h.subscription_id, &h.pulse);
        }
    }

    /// Forgets what a removed subscription held.
    pub fn drop_subscription(&mut self, subscription_id: u64) {
        self.held.retain(|h| h.subscription_id != subscription_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn pulse(reality: &str, sequence: u64, deps: &[(&str, u64)]) -> Arc<Pulse> {
        Arc::new(Pulse {
            reality: Arc::from(reality),
            topic: "a.b".into(),
            sequence,
            timestamp_unix_nanos: 0,
            encoded: Bytes::new(),
            deps: deps.iter().map(|(r, s)| (r.to_string(), *s)).collect(),
            chain: None,
            broadcast: false,
        })
    }

    #[test]
    fn holds_until_dependency_then_keeps_reality_order() {
        let mut gate = CausalGate::new(10);
        let start = |r: &str| (r == "a" || r == "b").then_some(1);
        let mut out = Vec::new();
        let mut deliver = |_s: u64, p: &Arc<Pulse>| out.push((p.reality.to_string(), p.sequence));
        // b1 depends on a2, which has not arrived.
        let b1 = pulse("b", 1, &[("a", 2)]);
        gate.arrive(1, &b1, &start, &mut deliver).unwrap();
        gate.note_seen(&b1.reality, 1);
        // b2 has no dependency but must stay behind b1.
        let b2 = pulse("b", 2, &[]);
        gate.arrive(1, &b2, &start, &mut deliver).unwrap();
        gate.note_seen(&b2.reality, 2);
        for s in 1..=2 {
            let a = pulse("a", s, &[]);
            gate.arrive(1, &a, &start, &mut deliver).unwrap();
            gate.note_seen(&a.reality, s);
            gate.release(&start, &mut deliver);
        }
        assert_eq!(
            out,
            vec![
                ("a".into(), 1),
                ("a".into(), 2),
                ("b".into(), 1),
                ("b".into(), 2)
            ]
        );
        assert_eq!(gate.held(), 0);
    }

    #[test]
    fn dependencies_on_unsubscribed_or_older_history_do_not_hold() {
        let mut gate = CausalGate::new(10);
        let start = |r: &str| (r == "a").then_some(50);
        let mut n = 0;
        let mut deliver = |_s: u64, _p: &Arc<Pulse>| n += 1;
        gate.arrive(
            1,
            &pulse("x", 1, &[("a", 10), ("zzz", 99)]),
            &start,
            &mut deliver,
        )
        .unwrap();
        assert_eq!(n, 1);
    }

    #[test]
    fn overflow_is_an_error() {
        let mut gate = CausalGate::new(2);
        let start = |_: &str| Some(1);
        let mut deliver = |_s: u64, _p: &Arc<Pulse>| {};
        for s in 1..=2 {
            gate.arrive(7, &pulse("b", s, &[("a", 100)]), &start, &mut deliver)
                .unwrap();
        }
        assert_eq!(
            gate.arrive(7, &pulse("b", 3, &[("a", 100)]), &start, &mut deliver),
            Err(Overflow { subscription_id: 7 })
        );
    }
}
