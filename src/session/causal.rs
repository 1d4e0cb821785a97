//! Causal delivery for one connection.
//!
//! A pulse carries its producer's vector clock (`causal`: reality → highest sequence seen).
//! For a subscription with `causal = true`, a pulse is delivered only once every pulse it
//! depends on — in realities this connection also subscribes to — has been delivered (or passed
//! by, when no subscription of this connection wanted it). Pulses of one reality keep their
//! order: once one is held, later ones of the same reality wait behind it.
//!
//! Held pulses are kept per reality, and only the head of each reality's queue can go next, so
//! each head waits on exactly one thing: the first dependency it lacks. Heads are indexed by
//! the reality and sequence they wait on, so a pulse passing wakes only the heads it may
//! release; the cost per pulse is the heads it releases, not everything held.
//!
//! The hold is bounded twice: a held pulse waits at most `limits.causal_hold_ms`, and the
//! connection holds at most `limits.max_causal_held`. A pulse that reaches either bound is
//! dropped for this connection — never delivered ahead of its dependencies — counted, and
//! reported to its subscription like a shed pulse (`Dropped`); what waited behind it goes on.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use crate::shard::Pulse;

/// A pulse waiting for its dependencies.
struct Held {
    subscription_id: u64,
    pulse: Arc<Pulse>,
    arrived_nanos: u64,
    /// Increases with every pulse held, so the oldest held pulse is the smallest ticket.
    ticket: u64,
}

/// The held pulses of one reality, oldest (lowest sequence) first.
#[derive(Default)]
struct Queue {
    items: VecDeque<Held>,
    /// The dependency the head waits on, as registered in `CausalGate::waiters`.
    waits_on: Option<(Box<str>, u64)>,
}

/// What the gate decided about a pulse.
#[derive(Debug, Clone, Copy)]
pub enum Outcome<'a> {
    /// Queue it for this subscription now.
    Deliver(u64, &'a Arc<Pulse>),
    /// Dropped for this subscription: it waited `limits.causal_hold_ms` for a dependency.
    Expired(u64),
    /// Dropped for this subscription: the connection held `limits.max_causal_held` pulses and
    /// this was the oldest.
    Evicted(u64),
}

pub struct CausalGate {
    /// Highest sequence of each reality that reached this connection's subscriptions.
    seen: HashMap<Arc<str>, u64>,
    queues: HashMap<Arc<str>, Queue>,
    /// Heads waiting, by the reality they wait on, then the sequence they need there.
    waiters: HashMap<Box<str>, BTreeMap<u64, Vec<Arc<str>>>>,
    /// (ticket, reality) of every held pulse in the order they were held, plus stale entries of
    /// pulses already gone (skipped when they reach the front, compacted when they pile up).
    order: VecDeque<(u64, Arc<str>)>,
    next_ticket: u64,
    held: usize,
    max_held: usize,
    hold_nanos: u64,
    /// A subscription went away: every head's readiness must be looked at again.
    recheck: bool,
}

impl CausalGate {
    pub fn new(max_held: usize, hold_nanos: u64) -> Self {
        Self {
            seen: HashMap::new(),
            queues: HashMap::new(),
            waiters: HashMap::new(),
            order: VecDeque::new(),
            next_ticket: 0,
            held: 0,
            max_held: max_held.max(1),
            hold_nanos,
            recheck: false,
        }
    }

    #[cfg(test)]
    fn held(&self) -> usize {
        self.held
    }

    /// True while some pulse is held.
    pub fn is_holding(&self) -> bool {
        self.held > 0
    }

    /// Everything of `reality` up to this sequence has been delivered or passed by.
    fn progress(&self, reality: &str) -> u64 {
        match self.queues.get(reality).and_then(|q| q.items.front()) {
            Some(head) => head.pulse.sequence.saturating_sub(1),
            None => self.seen.get(reality).copied().unwrap_or(0),
        }
    }

    /// The first dependency of `pulse` not yet delivered, if any. `start_of(r)` is the first
    /// sequence this connection's subscriptions to `r` deliver (None when it has none):
    /// dependencies before it are history the subscriber did not ask for.
    fn first_unmet<'p>(
        &self,
        pulse: &'p Pulse,
        start_of: &impl Fn(&str) -> Option<u64>,
    ) -> Option<(&'p str, u64)> {
        pulse
            .deps
            .iter()
            .find(|(reality, seq)| match start_of(reality) {
                None => false,
                Some(start) => *seq >= start && self.progress(reality) < *seq,
            })
            .map(|(r, s)| (r.as_str(), *s))
    }

    /// The time the oldest held pulse runs out, if any is held.
    pub fn next_deadline(&mut self) -> Option<u64> {
        self.skip_stale();
        let (ticket, reality) = self.order.front()?;
        let head = self.queues.get(reality)?.items.front()?;
        debug_assert_eq!(head.ticket, *ticket);
        Some(head.arrived_nanos.saturating_add(self.hold_nanos))
    }

    /// A pulse reached a causal subscription that wants it. Delivers it at once when it can,
    /// else holds it (dropping the oldest held pulse when the buffer is full).
    pub fn arrive(
        &mut self,
        subscription_id: u64,
        pulse: &Arc<Pulse>,
        now_nanos: u64,
        start_of: &impl Fn(&str) -> Option<u64>,
        out: &mut impl FnMut(Outcome<'_>),
    ) {
        self.recheck_if_needed(start_of, out);
        let queued = self.queues.contains_key(&pulse.reality);
        if !queued && self.first_unmet(pulse, start_of).is_none() {
            out(Outcome::Deliver(subscription_id, pulse));
            return;
        }
        if self.held >= self.max_held {
            self.drop_oldest(start_of, out, Outcome::Evicted);
            // Dropping may have released this reality's queue: look again.
            if !self.queues.contains_key(&pulse.reality)
                && self.first_unmet(pulse, start_of).is_none()
            {
                out(Outcome::Deliver(subscription_id, pulse));
                return;
            }
        }
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        let queue = self.queues.entry(pulse.reality.clone()).or_default();
        let is_head = queue.items.is_empty();
        queue.items.push_back(Held {
            subscription_id,
            pulse: pulse.clone(),
            arrived_nanos: now_nanos,
            ticket,
        });
        self.held += 1;
        self.order.push_back((ticket, pulse.reality.clone()));
        self.compact_order();
        if is_head {
            let mut work = Vec::new();
            self.drain_queue(&pulse.reality, start_of, out, &mut work);
            self.wake(work, start_of, out);
        }
    }

    /// A pulse of `reality` passed this connection (delivered, held or not wanted): held
    /// pulses waiting on it may go now.
    pub fn passed(
        &mut self,
        reality: &Arc<str>,
        sequence: u64,
        start_of: &impl Fn(&str) -> Option<u64>,
        out: &mut impl FnMut(Outcome<'_>),
    ) {
        self.recheck_if_needed(start_of, out);
        let entry = self.seen.entry(reality.clone()).or_insert(0);
        *entry = (*entry).max(sequence);
        if !self.queues.contains_key(reality) {
            self.wake(vec![reality.clone()], start_of, out);
        }
    }

    /// Drops every held pulse that has waited `hold_nanos` by `now_nanos`, and delivers what
    /// that releases.
    pub fn expire(
        &mut self,
        now_nanos: u64,
        start_of: &impl Fn(&str) -> Option<u64>,
        out: &mut impl FnMut(Outcome<'_>),
    ) {
        self.recheck_if_needed(start_of, out);
        while self.next_deadline().is_some_and(|d| d <= now_nanos) {
            self.drop_oldest(start_of, out, Outcome::Expired);
        }
    }

    /// Forgets what a removed subscription held.
    pub fn drop_subscription(&mut self, subscription_id: u64) {
        let mut removed = 0;
        for queue in self.queues.values_mut() {
            let before = queue.items.len();
            queue.items.retain(|h| h.subscription_id != subscription_id);
            removed += before - queue.items.len();
        }
        // Whatever it held, its reality may no longer be one this connection subscribes to,
        // so dependencies on it stop holding anything: look at every head again at the next
        // pulse or deadline (when `start_of` is at hand).
        self.recheck = self.held > 0;
        if removed == 0 {
            return;
        }
        self.held -= removed;
        // Heads changed: rebuild the index (the recheck registers them again).
        self.queues.retain(|_, q| !q.items.is_empty());
        self.waiters.clear();
        for queue in self.queues.values_mut() {
            queue.waits_on = None;
        }
        self.rebuild_order();
        self.recheck = self.held > 0;
    }

    fn recheck_if_needed(
        &mut self,
        start_of: &impl Fn(&str) -> Option<u64>,
        out: &mut impl FnMut(Outcome<'_>),
    ) {
        if !std::mem::take(&mut self.recheck) {
            return;
        }
        let realities: Vec<Arc<str>> = self.queues.keys().cloned().collect();
        let mut work = Vec::new();
        for reality in realities {
            self.unregister(&reality);
            self.drain_queue(&reality, start_of, out, &mut work);
        }
        self.wake(work, start_of, out);
    }

    /// Drops the oldest held pulse (always the head of its reality's queue), reports it with
    /// `why`, and delivers what that releases.
    fn drop_oldest(
        &mut self,
        start_of: &impl Fn(&str) -> Option<u64>,
        out: &mut impl FnMut(Outcome<'_>),
        why: fn(u64) -> Outcome<'static>,
    ) {
        self.skip_stale();
        let Some((ticket, reality)) = self.order.pop_front() else {
            return;
        };
        self.unregister(&reality);
        let Some(head) = self
            .queues
            .get_mut(&reality)
            .and_then(|q| q.items.pop_front())
        else {
            return;
        };
        debug_assert_eq!(head.ticket, ticket, "the oldest held pulse heads its queue");
        self.held -= 1;
        out(why(head.subscription_id));
        // What waited behind it, and what depended on it, may go now: it has passed by.
        let mut work = vec![reality.clone()];
        self.drain_queue(&reality, start_of, out, &mut work);
        self.wake(work, start_of, out);
    }

    /// Delivers the heads of `reality`'s queue while they are ready; registers the first that
    /// is not under the dependency it lacks. Pushes `reality` on `work` when its progress rose.
    fn drain_queue(
        &mut self,
        reality: &Arc<str>,
        start_of: &impl Fn(&str) -> Option<u64>,
        out: &mut impl FnMut(Outcome<'_>),
        work: &mut Vec<Arc<str>>,
    ) {
        let mut released = false;
        while let Some(queue) = self.queues.get(reality) {
            let Some(head) = queue.items.front() else {
                self.queues.remove(reality);
                break;
            };
            // A pulse never depends on its own reality (`deps` leaves it out), so its queue
            // does not affect its own readiness.
            if let Some((needs, seq)) = self.first_unmet(&head.pulse, start_of) {
                let needs: Box<str> = needs.into();
                self.waiters
                    .entry(needs.clone())
                    .or_default()
                    .entry(seq)
                    .or_default()
                    .push(reality.clone());
                if let Some(queue) = self.queues.get_mut(reality) {
                    queue.waits_on = Some((needs, seq));
                }
                break;
            }
            let Some(head) = self
                .queues
                .get_mut(reality)
                .and_then(|q| q.items.pop_front())
            else {
                break;
            };
            self.held -= 1;
            released = true;
            out(Outcome::Deliver(head.subscription_id, &head.pulse));
        }
        if released {
            work.push(reality.clone());
        }
    }

    /// The progress of each reality on `work` rose: wakes the heads waiting on it that it
    /// satisfies, and follows what their release makes progress in turn.
    fn wake(
        &mut self,
        mut work: Vec<Arc<str>>,
        start_of: &impl Fn(&str) -> Option<u64>,
        out: &mut impl FnMut(Outcome<'_>),
    ) {
        while let Some(reality) = work.pop() {
            let progress = self.progress(&reality);
            let Some(by_seq) = self.waiters.get_mut(&*reality) else {
                continue;
            };
            let still_waiting = by_seq.split_off(&progress.saturating_add(1));
            let woken = std::mem::replace(by_seq, still_waiting);
            if by_seq.is_empty() {
                self.waiters.remove(&*reality);
            }
            for head_of in woken.into_values().flatten() {
                if let Some(queue) = self.queues.get_mut(&head_of) {
                    queue.waits_on = None;
                }
                self.drain_queue(&head_of, start_of, out, &mut work);
            }
        }
    }

    /// Removes `reality`'s head from the waiters index.
    fn unregister(&mut self, reality: &Arc<str>) {
        let Some((needs, seq)) = self.queues.get_mut(reality).and_then(|q| q.waits_on.take())
        else {
            return;
        };
        if let Some(by_seq) = self.waiters.get_mut(&needs) {
            if let Some(heads) = by_seq.get_mut(&seq) {
                heads.retain(|h| h != reality);
                if heads.is_empty() {
                    by_seq.remove(&seq);
                }
            }
            if by_seq.is_empty() {
                self.waiters.remove(&needs);
            }
        }
    }

    /// Pops `order` entries whose pulse is no longer held. Pulses leave a queue only from its
    /// front (drop_subscription rebuilds `order`), so an entry is live exactly when its ticket
    /// is not older than its queue's head.
    fn skip_stale(&mut self) {
        while let Some((ticket, reality)) = self.order.front() {
            let live = self
                .queues
                .get(reality)
                .and_then(|q| q.items.front())
                .is_some_and(|h| h.ticket <= *ticket);
            if live {
                return;
            }
            self.order.pop_front();
        }
    }

    /// Keeps `order` within a small multiple of what is held: released pulses leave stale
    /// entries behind a long-held one.
    fn compact_order(&mut self) {
        if self.order.len() > 2 * self.max_held + 64 {
            self.rebuild_order();
        }
    }

    fn rebuild_order(&mut self) {
        let mut order: Vec<(u64, Arc<str>)> = self
            .queues
            .iter()
            .flat_map(|(r, q)| q.items.iter().map(|h| (h.ticket, r.clone())))
            .collect();
        order.sort_unstable_by_key(|(t, _)| *t);
        self.order = order.into();
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

    /// What the gate said, as (what, subscription, reality, sequence); drops carry no pulse.
    type Log = Vec<(&'static str, u64, String, u64)>;

    fn record(log: &mut Log) -> impl FnMut(Outcome<'_>) + '_ {
        |o| match o {
            Outcome::Deliver(s, p) => log.push(("deliver", s, p.reality.to_string(), p.sequence)),
            Outcome::Expired(s) => log.push(("expired", s, String::new(), 0)),
            Outcome::Evicted(s) => log.push(("evicted", s, String::new(), 0)),
        }
    }

    /// A pulse reaching the gate as the shard hands it over: arrive, then passed.
    fn feed(gate: &mut CausalGate, now: u64, p: &Arc<Pulse>, log: &mut Log) {
        let start = |r: &str| (r == "a" || r == "b" || r == "c").then_some(1);
        gate.arrive(1, p, now, &start, &mut record(log));
        gate.passed(&p.reality, p.sequence, &start, &mut record(log));
    }

    fn delivered(log: &Log) -> Vec<(String, u64)> {
        log.iter()
            .filter(|e| e.0 == "deliver")
            .map(|e| (e.2.clone(), e.3))
            .collect()
    }

    #[test]
    fn holds_until_dependency_then_keeps_reality_order() {
        let mut gate = CausalGate::new(10, u64::MAX);
        let mut log = Log::new();
        // b1 depends on a2, which has not arrived; b2 has no dependency but stays behind b1.
        feed(&mut gate, 0, &pulse("b", 1, &[("a", 2)]), &mut log);
        feed(&mut gate, 0, &pulse("b", 2, &[]), &mut log);
        for s in 1..=2 {
            feed(&mut gate, 0, &pulse("a", s, &[]), &mut log);
        }
        let want: Vec<(String, u64)> = vec![
            ("a".into(), 1),
            ("a".into(), 2),
            ("b".into(), 1),
            ("b".into(), 2),
        ];
        assert_eq!(delivered(&log), want);
        assert_eq!(gate.held(), 0);
        assert!(gate.waiters.is_empty() && gate.queues.is_empty());
    }

    #[test]
    fn release_follows_chains_across_realities() {
        let mut gate = CausalGate::new(10, u64::MAX);
        let mut log = Log::new();
        // c1 waits for b1, which waits for a1.
        feed(&mut gate, 0, &pulse("c", 1, &[("b", 1)]), &mut log);
        feed(&mut gate, 0, &pulse("b", 1, &[("a", 1)]), &mut log);
        assert!(log.is_empty());
        feed(&mut gate, 0, &pulse("a", 1, &[]), &mut log);
        let want: Vec<(String, u64)> = vec![("a".into(), 1), ("b".into(), 1), ("c".into(), 1)];
        assert_eq!(delivered(&log), want);
        assert_eq!(gate.held(), 0);
    }

    #[test]
    fn dependencies_on_unsubscribed_or_older_history_do_not_hold() {
        let mut gate = CausalGate::new(10, u64::MAX);
        let start = |r: &str| (r == "a").then_some(50);
        let mut log = Log::new();
        let p = pulse("x", 1, &[("a", 10), ("zzz", 99)]);
        gate.arrive(1, &p, 0, &start, &mut record(&mut log));
        assert_eq!(delivered(&log), vec![("x".to_string(), 1)]);
    }

    #[test]
    fn a_pulse_held_too_long_is_dropped_and_what_waited_behind_it_goes_on() {
        let mut gate = CausalGate::new(10, 1_000);
        let mut log = Log::new();
        feed(&mut gate, 100, &pulse("b", 1, &[("a", 5)]), &mut log);
        feed(&mut gate, 200, &pulse("b", 2, &[]), &mut log);
        // c1 depends on b1: once b1 is dropped it has passed by.
        feed(&mut gate, 300, &pulse("c", 1, &[("b", 1)]), &mut log);
        assert_eq!(gate.next_deadline(), Some(1_100));
        let start = |_: &str| Some(1);
        gate.expire(1_099, &start, &mut record(&mut log));
        assert!(log.is_empty());
        gate.expire(1_100, &start, &mut record(&mut log));
        assert_eq!(log[0], ("expired", 1, String::new(), 0));
        let want: Vec<(String, u64)> = vec![("b".into(), 2), ("c".into(), 1)];
        assert_eq!(delivered(&log), want);
        assert_eq!(gate.held(), 0);
        assert_eq!(gate.next_deadline(), None);
    }

    #[test]
    fn a_full_buffer_drops_its_oldest_pulse() {
        let mut gate = CausalGate::new(2, u64::MAX);
        let mut log = Log::new();
        for s in 1..=3 {
            feed(&mut gate, s, &pulse("b", s, &[("a", 100)]), &mut log);
        }
        assert_eq!(log, vec![("evicted", 1, String::new(), 0)]);
        assert_eq!(gate.held(), 2);
        // b2 and b3 still wait for a100, and in order.
        assert_eq!(gate.progress("b"), 1);
    }

    #[test]
    fn dropping_a_subscription_releases_what_waited_on_its_reality() {
        let mut gate = CausalGate::new(10, u64::MAX);
        let mut log = Log::new();
        feed(&mut gate, 0, &pulse("b", 1, &[("a", 9)]), &mut log);
        assert_eq!(gate.held(), 1);
        // The connection no longer subscribes to `a`: b1's dependency is not its concern.
        gate.drop_subscription(7);
        let start = |r: &str| (r == "b").then_some(1);
        gate.passed(&Arc::from("b"), 1, &start, &mut record(&mut log));
        assert_eq!(delivered(&log), vec![("b".to_string(), 1)]);
    }

    #[test]
    fn stale_order_entries_stay_bounded() {
        let mut gate = CausalGate::new(4, u64::MAX);
        let mut log = Log::new();
        // One pulse held for good, then many held briefly and released.
        let start = |_: &str| Some(1);
        let c = pulse("c", 1, &[("zzz", 1)]);
        gate.arrive(1, &c, 0, &start, &mut record(&mut log));
        for s in 1..=1000 {
            let b = pulse("b", s, &[("a", s)]);
            gate.arrive(1, &b, 0, &start, &mut record(&mut log));
            gate.passed(&b.reality, s, &start, &mut record(&mut log));
            let a = pulse("a", s, &[]);
            gate.arrive(1, &a, 0, &start, &mut record(&mut log));
            gate.passed(&a.reality, s, &start, &mut record(&mut log));
        }
        assert_eq!(gate.held(), 1);
        assert!(gate.order.len() <= 2 * 4 + 64 + 1, "{}", gate.order.len());
        assert_eq!(delivered(&log).len(), 2000);
    }
}
