//! The shard-local subscription index: which connections on this shard want which pulses.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use super::Pulse;
use crate::delta::Chains;
use crate::filter::{Filter, LazyView};
use crate::metrics::ShardCounters;
use crate::routing::Pattern;
use crate::session::Conn;

/// Marks a subscription the owner has not confirmed yet: nothing is delivered to it.
const PENDING: u64 = u64::MAX;

/// One subscription of one local connection.
pub struct LocalSub {
    pub conn: Rc<Conn>,
    pub subscription_id: u64,
    pub pattern: Pattern,
    /// Deliver only after causal dependencies (see `session::causal`).
    pub causal: bool,
    /// `Subscribe.filter`, compiled; `None` delivers every pulse the pattern matches.
    pub filter: Option<Arc<Filter>>,
    /// First sequence to deliver; [`PENDING`] until the owner confirms.
    active_from: Cell<u64>,
    /// The owner counts this subscription's interest (so removing it must tell the owner).
    interest_registered: Cell<bool>,
    /// `Subscribed` was sent.
    announced: Cell<bool>,
    /// The last pulse of each delta-only topic queued to it (see `crate::delta`).
    chains: RefCell<Chains>,
}

impl LocalSub {
    /// A subscription from `latest`: its interest is announced to the owner at once.
    pub fn live(conn: Rc<Conn>, subscription_id: u64, pattern: Pattern, causal: bool) -> Self {
        let mut s = Self::new(conn, subscription_id, pattern, true);
        s.causal = causal;
        s
    }

    /// A subscription that replays first: the owner counts it only once replay catches up.
    pub fn replaying(conn: Rc<Conn>, subscription_id: u64, pattern: Pattern) -> Self {
        Self::new(conn, subscription_id, pattern, false)
    }

    fn new(conn: Rc<Conn>, subscription_id: u64, pattern: Pattern, registered: bool) -> Self {
        Self {
            conn,
            subscription_id,
            pattern,
            causal: false,
            filter: None,
            active_from: Cell::new(PENDING),
            interest_registered: Cell::new(registered),
            announced: Cell::new(false),
            chains: RefCell::new(Chains::default()),
        }
    }

    /// Starts delivery at `sequence`. Earlier pulses still in flight are not this
    /// subscription's: it asked for what comes after it was registered.
    pub fn activate(&self, sequence: u64) {
        self.active_from.set(sequence);
        self.announced.set(true);
    }

    /// Replay caught up: live delivery starts at `sequence`, and the owner counts us.
    pub fn go_live(&self, sequence: u64) {
        self.interest_registered.set(true);
        self.active_from.set(sequence);
    }

    pub fn interest_registered(&self) -> bool {
        self.interest_registered.get()
    }

    pub fn announced(&self) -> bool {
        self.announced.get()
    }

    pub fn announce(&self) {
        self.announced.set(true);
    }

    #[inline]
    pub fn wants(&self, sequence: u64, topic: &str) -> bool {
        sequence >= self.active_from.get() && self.pattern.matches(topic)
    }

    /// Delivers live at `sequence` (whatever the topic): confirmed, and not replaying.
    #[inline]
    pub fn live_at(&self, sequence: u64) -> bool {
        sequence >= self.active_from.get()
    }

    /// After a replay: the last state of each delta-only topic it sent is where the live
    /// chain goes on.
    pub fn continue_chains(&self, states: &HashMap<String, (u64, Vec<u8>)>) {
        let mut chains = self.chains.borrow_mut();
        for (topic, (sequence, _)) in states {
            chains.offered(topic, *sequence, true);
        }
    }

    /// Queues a pulse for this subscription: a delta-only topic's pulse as its delta when this
    /// subscription's last pulse of the topic is the delta's base, else whole.
    #[inline]
    pub fn deliver(&self, counters: &ShardCounters, pulse: &Arc<Pulse>) {
        let Some(chain) = &pulse.chain else {
            self.conn
                .push_deliver(counters, self.subscription_id, pulse, false);
            return;
        };
        let mut chains = self.chains.borrow_mut();
        let delta = chain.delta.is_some() && chains.holds(&pulse.topic, chain.base_sequence);
        if delta {
            counters.delta_deliveries.inc();
        } else if chain.delta.is_some() {
            counters.delta_keyframes_resent.inc();
        }
        let queued = self
            .conn
            .push_deliver(counters, self.subscription_id, pulse, delta);
        chains.offered(&pulse.topic, pulse.sequence, queued);
    }

    /// The filter's verdict on a pulse this subscription [`wants`](Self::wants); true without
    /// a filter. The envelope is walked only by the first filter that asks, once per pulse.
    #[inline]
    pub fn admits(&self, view: &mut LazyView<'_>) -> bool {
        self.filter.as_ref().is_none_or(|f| f.admits(view))
    }

    /// Sets the filter (builder style, at subscribe time).
    pub fn with_filter(mut self, filter: Option<Arc<Filter>>) -> Self {
        self.filter = filter;
        self
    }
}

/// Subscriptions by reality.
#[derive(Default)]
pub struct SubIndex {
    by_reality: HashMap<Box<str>, Vec<Rc<LocalSub>>>,
}

impl SubIndex {
    pub fn insert(&mut self, reality: &str, sub: Rc<LocalSub>) {
        match self.by_reality.get_mut(reality) {
            Some(list) => list.push(sub),
            None => {
                self.by_reality.insert(reality.into(), vec![sub]);
            }
        }
    }

    pub fn find(&self, reality: &str, conn: u64, subscription_id: u64) -> Option<&Rc<LocalSub>> {
        self.by_reality
            .get(reality)?
            .iter()
            .find(|s| s.conn.id == conn && s.subscription_id == subscription_id)
    }

    /// Removes one subscription and returns it.
    pub fn remove(
        &mut self,
        reality: &str,
        conn: u64,
        subscription_id: u64,
    ) -> Option<Rc<LocalSub>> {
        let list = self.by_reality.get_mut(reality)?;
        let at = list
            .iter()
            .position(|s| s.conn.id == conn && s.subscription_id == subscription_id)?;
        let removed = list.swap_remove(at);
        if list.is_empty() {
            self.by_reality.remove(reality);
        }
        Some(removed)
    }

    /// The first sequence any subscription of `conn` to `reality` delivers; `None` when it has
    /// none there.
    pub fn start_for_conn(&self, reality: &str, conn: u64) -> Option<u64> {
        self.for_reality(reality)
            .iter()
            .filter(|s| s.conn.id == conn)
            .map(|s| s.active_from.get())
            .min()
    }

    /// The subscriptions to `reality` on this shard.
    #[inline]
    pub fn for_reality(&self, reality: &str) -> &[Rc<LocalSub>] {
        self.by_reality.get(reality).map(|v| &v[..]).unwrap_or(&[])
    }
}
