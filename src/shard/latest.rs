//! What a new subscription is given first: per reality this shard owns, the latest released
//! pulse of each delta-only topic (its keyframe, so a late joiner starts from the current state)
//! and of each parameter (`sys.param.*`).

use std::collections::HashMap;
use std::sync::Arc;

use super::Pulse;

#[derive(Default)]
pub struct LatestPulses {
    by_reality: HashMap<Arc<str>, HashMap<Box<str>, Arc<Pulse>>>,
}

impl LatestPulses {
    /// A pulse was released (stored as its sync mode requires, fanned out). The caller bounds
    /// what is recorded: tracked delta-only topics and parameters, both limited per shard or
    /// reality.
    pub fn released(&mut self, pulse: &Arc<Pulse>) {
        let topics = match self.by_reality.get_mut(&pulse.reality) {
            Some(t) => t,
            None => self.by_reality.entry(pulse.reality.clone()).or_default(),
        };
        match topics.get_mut(pulse.topic.as_str()) {
            Some(latest) => {
                if latest.sequence < pulse.sequence {
                    *latest = pulse.clone();
                }
            }
            None => {
                topics.insert(pulse.topic.as_str().into(), pulse.clone());
            }
        }
    }

    /// The latest pulses of `reality`, in sequence order.
    /// True when a pulse of `reality` is kept for late joiners.
    pub fn holds(&self, reality: &str) -> bool {
        self.by_reality.get(reality).is_some_and(|t| !t.is_empty())
    }

    pub fn of(&self, reality: &str) -> Vec<Arc<Pulse>> {
        let mut out: Vec<Arc<Pulse>> = self
            .by_reality
            .get(reality)
            .map(|t| t.values().cloned().collect())
            .unwrap_or_default();
        out.sort_by_key(|p| p.sequence);
        out
    }

    /// The latest pulse of each parameter of `reality`, in sequence order.
    pub fn params_of(&self, reality: &str) -> Vec<Arc<Pulse>> {
        let mut out = self.of(reality);
        out.retain(|p| p.broadcast);
        out
    }
}
