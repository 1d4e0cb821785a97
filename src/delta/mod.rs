//! Delta-only topics (FR-MSG-03, docs/delta.md).
//!
//! The owner keeps each delta-only topic's current state. It stores and replays whole states
//! (the log, operators and policies never see a delta) and, once per pulse, encodes two forms of
//! it: the keyframe (the whole state, `DeltaInfo.keyframe`) and, when it is worth it, the delta
//! against the topic's previous pulse. Every subscriber's shard picks one per subscription:
//! the delta only when that subscription's last pulse of the topic is the delta's base
//! ([`Chains`]), so a subscriber that missed anything gets a keyframe, never a broken chain.

pub use arqonbus_proto::delta as codec;
pub use arqonbus_proto::delta::checksum;

use std::collections::HashMap;
use std::sync::Arc;

use arqonbus_proto::v1::{ArqonMessage, DeltaInfo};
use bytes::Bytes;
use prost::Message;

use crate::config::Config;
use crate::policy::RealityGlob;
use crate::routing::Pattern;

/// The `[[delta]]` rules, parsed (the configuration was validated).
#[derive(Debug, Clone, Default)]
pub struct DeltaRules {
    rules: Vec<(RealityGlob, Pattern, u32)>,
}

impl DeltaRules {
    pub fn from_config(config: &Config) -> Self {
        let rules = config
            .delta
            .iter()
            .filter_map(|r| {
                Some((
                    RealityGlob::parse(&r.realities).ok()?,
                    Pattern::parse(&r.topics).ok()?,
                    r.keyframe_every.max(1),
                ))
            })
            .collect();
        Self { rules }
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// `keyframe_every` of the first rule covering the topic; `None` when it is not delta-only.
    pub fn keyframe_every(&self, reality: &str, topic: &str) -> Option<u32> {
        self.rules
            .iter()
            .find(|(r, t, _)| t.matches(topic) && r.matches(reality))
            .map(|(_, _, every)| *every)
    }
}

/// What a delta-only pulse carries besides its keyframe form (`Pulse.encoded`).
#[derive(Debug)]
pub struct Chain {
    /// The topic's previous pulse: a subscription whose last pulse of the topic is this one may
    /// take [`delta`](Self::delta).
    pub base_sequence: u64,
    /// The encoded envelope with the delta as its payload; `None` when this pulse goes to
    /// everyone whole (a periodic keyframe, the first pulse, a delta no smaller than the state).
    pub delta: Option<Bytes>,
    /// The owner keeps this topic's state (it was within the bounds): its latest pulse is what
    /// a new subscription gets first.
    pub tracked: bool,
}

struct TopicState {
    sequence: u64,
    type_url: String,
    value: Vec<u8>,
    /// Deltas sent since the last keyframe that went to everyone.
    since_keyframe: u32,
}

/// The owner's side: the current state of every delta-only topic of the realities it owns.
pub struct OwnerStates {
    rules: DeltaRules,
    states: HashMap<Arc<str>, HashMap<Box<str>, TopicState>>,
    topics: usize,
    max_topics: usize,
    max_state_bytes: usize,
}

impl OwnerStates {
    pub fn new(config: &Config) -> Self {
        Self {
            rules: DeltaRules::from_config(config),
            states: HashMap::new(),
            topics: 0,
            max_topics: config.limits.max_delta_topics_per_shard as usize,
            max_state_bytes: config.limits.max_delta_state_bytes as usize,
        }
    }

    /// True when a delta-only topic of `reality` has a state.
    pub fn holds(&self, reality: &str) -> bool {
        self.states.get(reality).is_some_and(|t| !t.is_empty())
    }

    pub fn rules(&self) -> &DeltaRules {
        &self.rules
    }

    pub fn is_delta_only(&self, reality: &str, topic: &str) -> bool {
        !self.rules.is_empty() && self.rules.keyframe_every(reality, topic).is_some()
    }

    /// Before sequencing: turns a producer's own delta into the whole state it stands for, so
    /// what is stored and sequenced is always whole. A pulse without `delta`, or marked as a
    /// keyframe, is left whole (the bus sets `delta` itself).
    pub fn resolve(&self, message: &mut ArqonMessage) -> Result<(), String> {
        let Some(info) = message.delta.take() else {
            return Ok(());
        };
        if info.keyframe {
            return Ok(());
        }
        let (reality, topic) = (&message.reality_id, &message.topic);
        if !self.is_delta_only(reality, topic) {
            return Err(format!(
                "topic `{topic}` of reality `{reality}` is not delta-only: publish whole states"
            ));
        }
        let Some(state) = self
            .states
            .get(reality.as_str())
            .and_then(|t| t.get(&**topic))
        else {
            return Err(format!(
                "topic `{topic}` has no state to apply a delta to (base {}); publish the whole \
                 state",
                info.base_sequence
            ));
        };
        if state.sequence != info.base_sequence {
            return Err(format!(
                "delta base {} is not the current state of `{topic}` (sequence {}); publish the \
                 whole state",
                info.base_sequence, state.sequence
            ));
        }
        let payload = message.payload.get_or_insert_with(Default::default);
        let whole = codec::apply(&state.value, &payload.value, self.max_state_bytes)
            .map_err(|e| format!("the delta does not apply: {e}"))?;
        let sum = checksum(&whole);
        if sum != info.checksum {
            return Err(format!(
                "the delta applied to sequence {} gives CRC-32 {sum:08x}, not the declared \
                 {:08x}; publish the whole state",
                info.base_sequence, info.checksum
            ));
        }
        if payload.type_url.is_empty() {
            payload.type_url = state.type_url.clone();
        }
        payload.value = whole;
        Ok(())
    }

    /// Once the owner stamped the pulse (its sequence is known): marks it as this topic's new
    /// state and decides its forms. Sets `message.delta` (the keyframe's `DeltaInfo`) and
    /// returns the base sequence, the delta payload to send besides (if any), and whether the
    /// topic is tracked. `None` for a topic that is not delta-only.
    pub fn stamp(&mut self, message: &mut ArqonMessage) -> Option<(u64, Option<Vec<u8>>, bool)> {
        if self.rules.is_empty() {
            return None;
        }
        let every = self
            .rules
            .keyframe_every(&message.reality_id, &message.topic)?;
        let (type_url, value): (&str, &[u8]) = message
            .payload
            .as_ref()
            .map_or(("", &[]), |p| (p.type_url.as_str(), &p.value[..]));
        let topics = match self.states.get_mut(message.reality_id.as_str()) {
            Some(t) => t,
            None => self
                .states
                .entry(Arc::from(message.reality_id.as_str()))
                .or_default(),
        };
        let previous = topics.get_mut(message.topic.as_str());
        let base = previous.as_ref().map_or(0, |s| s.sequence);
        let mut delta = None;
        if let Some(prev) = previous.as_ref() {
            if prev.since_keyframe + 1 < every
                && prev.type_url == type_url
                && value.len() <= self.max_state_bytes
            {
                let d = codec::encode(&prev.value, value);
                if d.len() < value.len() {
                    delta = Some(d);
                }
            }
        }
        let since_keyframe = match (&delta, &previous) {
            (Some(_), Some(prev)) => prev.since_keyframe + 1,
            _ => 0,
        };
        let sum = checksum(value);
        let next = TopicState {
            sequence: message.sequence,
            type_url: type_url.to_owned(),
            value: value.to_vec(),
            since_keyframe,
        };
        let tracked = match previous {
            Some(state) => {
                *state = next;
                true
            }
            None if value.len() <= self.max_state_bytes && self.topics < self.max_topics => {
                topics.insert(message.topic.as_str().into(), next);
                self.topics += 1;
                true
            }
            // Untracked (past the bounds): every pulse of it goes out whole.
            None => false,
        };
        message.delta = Some(DeltaInfo {
            keyframe: true,
            base_sequence: base,
            checksum: sum,
        });
        Some((base, delta, tracked))
    }
}

/// Encodes the delta form of a stamped pulse whose keyframe form is `message`: the same
/// envelope with the delta as its payload. `message` is left as it was.
pub fn encode_delta_form(message: &mut ArqonMessage, delta: Vec<u8>) -> Bytes {
    let payload = message.payload.as_mut().expect("a delta has a payload");
    let whole = std::mem::replace(&mut payload.value, delta);
    let info = message.delta.as_mut().expect("stamped as delta-only");
    info.keyframe = false;
    let encoded = Bytes::from(message.encode_to_vec());
    message.delta.as_mut().expect("still there").keyframe = true;
    message.payload.as_mut().expect("still there").value = whole;
    encoded
}

/// The subscriber's side: per subscription, the last pulse of each delta-only topic it was
/// given. Empty (and never touched) for subscriptions that meet no delta-only topic.
#[derive(Debug, Default)]
pub struct Chains {
    last: HashMap<Box<str>, u64>,
}

impl Chains {
    /// Whether this subscription may take the delta form of a pulse of `topic` based on
    /// `base_sequence`.
    pub fn holds(&self, topic: &str, base_sequence: u64) -> bool {
        self.last.get(topic) == Some(&base_sequence)
    }

    /// After a pulse of `topic` was offered to the subscription: queued, its state is the
    /// topic's latest; dropped (shed, or refused by its filter), the chain is broken and the
    /// next pulse goes whole.
    pub fn offered(&mut self, topic: &str, sequence: u64, queued: bool) {
        if queued {
            match self.last.get_mut(topic) {
                Some(last) => *last = sequence,
                None => {
                    self.last.insert(topic.into(), sequence);
                }
            }
        } else {
            self.last.remove(topic);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost_types::Any;

    fn config(every: u32) -> Config {
        let c = Config::from_toml(&format!(
            "[[delta]]\nrealities = \"lab-*\"\ntopics = \"sim.state.>\"\nkeyframe_every = {every}\n"
        ))
        .unwrap();
        c.validate().unwrap();
        c
    }

    fn pulse(topic: &str, sequence: u64, value: &[u8]) -> ArqonMessage {
        ArqonMessage {
            reality_id: "lab-1".into(),
            topic: topic.into(),
            sequence,
            payload: Some(Any {
                type_url: "type.googleapis.com/lab.State".into(),
                value: value.to_vec(),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn deltas_between_keyframes() {
        let mut owner = OwnerStates::new(&config(3));
        let mut state = vec![7u8; 256];
        let mut kinds = Vec::new();
        for seq in 1..=7u64 {
            state[seq as usize] ^= 1;
            let mut m = pulse("sim.state.grid", seq, &state);
            let (base, delta, _) = owner.stamp(&mut m).expect("delta-only");
            let info = m.delta.unwrap();
            assert!(info.keyframe);
            assert_eq!(info.checksum, checksum(&state));
            assert_eq!(base, seq - 1);
            if let Some(d) = &delta {
                let prev = {
                    let mut p = state.clone();
                    p[seq as usize] ^= 1;
                    p
                };
                assert_eq!(codec::apply(&prev, d, 1 << 20).unwrap(), state);
            }
            kinds.push(delta.is_some());
        }
        // The first pulse, then every third goes whole.
        assert_eq!(kinds, [false, true, true, false, true, true, false]);
        // Other topics and realities are not delta-only.
        assert!(owner.stamp(&mut pulse("sim.other.x", 8, b"x")).is_none());
        let mut elsewhere = pulse("sim.state.grid", 9, b"x");
        elsewhere.reality_id = "prod".into();
        assert!(owner.stamp(&mut elsewhere).is_none());
    }

    #[test]
    fn a_delta_no_smaller_than_the_state_goes_whole() {
        let mut owner = OwnerStates::new(&config(100));
        owner.stamp(&mut pulse("sim.state.a", 1, b"abcd"));
        let (_, delta, _) = owner.stamp(&mut pulse("sim.state.a", 2, b"wxyz")).unwrap();
        assert!(delta.is_none());
    }

    #[test]
    fn producer_deltas_resolve_against_the_current_state() {
        let mut owner = OwnerStates::new(&config(100));
        let base = vec![1u8; 100];
        owner.stamp(&mut pulse("sim.state.a", 5, &base));
        let mut next = base.clone();
        next[50] = 9;
        let mut m = pulse("sim.state.a", 0, &codec::encode(&base, &next));
        m.delta = Some(DeltaInfo {
            keyframe: false,
            base_sequence: 5,
            checksum: checksum(&next),
        });
        owner.resolve(&mut m).unwrap();
        assert_eq!(&m.payload.as_ref().unwrap().value[..], &next[..]);
        assert!(m.delta.is_none());

        let refused = |base_sequence: u64, sum: u32, topic: &str| {
            let mut m = pulse(topic, 0, &codec::encode(&base, &next));
            m.delta = Some(DeltaInfo {
                keyframe: false,
                base_sequence,
                checksum: sum,
            });
            owner.resolve(&mut m).unwrap_err()
        };
        assert!(refused(4, checksum(&next), "sim.state.a").contains("not the current state"));
        assert!(refused(5, 1, "sim.state.a").contains("CRC-32"));
        assert!(refused(5, checksum(&next), "sim.state.b").contains("no state"));
        assert!(refused(5, checksum(&next), "other.topic").contains("not delta-only"));
    }

    #[test]
    fn the_delta_form_decodes_to_the_same_envelope_but_payload() {
        let mut owner = OwnerStates::new(&config(100));
        owner.stamp(&mut pulse("sim.state.a", 1, &[0u8; 64]));
        let mut changed = [0u8; 64];
        changed[10] = 1;
        let mut m = pulse("sim.state.a", 2, &changed);
        let (_, delta, _) = owner.stamp(&mut m).unwrap();
        let keyframe = m.encode_to_vec();
        let form = encode_delta_form(&mut m, delta.unwrap());
        assert_eq!(m.encode_to_vec(), keyframe, "the message is left as it was");
        let decoded = ArqonMessage::decode(form).unwrap();
        let info = decoded.delta.unwrap();
        assert!(!info.keyframe);
        assert_eq!(info.base_sequence, 1);
        let whole = codec::apply(&[0u8; 64], &decoded.payload.unwrap().value, 64).unwrap();
        assert_eq!(checksum(&whole), info.checksum);
    }

    #[test]
    fn chains_break_on_a_missed_pulse() {
        let mut c = Chains::default();
        assert!(!c.holds("a", 0));
        c.offered("a", 3, true);
        assert!(c.holds("a", 3));
        c.offered("a", 4, false);
        assert!(!c.holds("a", 4));
        assert!(!c.holds("a", 3));
        c.offered("a", 5, true);
        assert!(c.holds("a", 5));
    }

    #[test]
    fn topics_past_the_bound_go_whole() {
        let mut c = config(100);
        c.limits.max_delta_topics_per_shard = 1;
        let mut owner = OwnerStates::new(&c);
        owner.stamp(&mut pulse("sim.state.a", 1, &[0u8; 64]));
        owner.stamp(&mut pulse("sim.state.b", 2, &[0u8; 64]));
        let mut changed = [0u8; 64];
        changed[3] = 1;
        let (_, a, a_tracked) = owner.stamp(&mut pulse("sim.state.a", 3, &changed)).unwrap();
        let (base_b, b, b_tracked) = owner
            .stamp(&mut pulse("sim.state.b", 4, &[0u8; 64]))
            .unwrap();
        assert!(a.is_some() && a_tracked, "the tracked topic gets deltas");
        assert!(
            b.is_none() && base_b == 0 && !b_tracked,
            "the untracked one never does"
        );
    }
}
