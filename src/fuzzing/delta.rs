//! ArqonDelta (`proto/src/delta.rs`, `delta/`): a producer may publish a delta against the
//! topic's last state, which the owner applies before sequencing; every receiver applies the
//! deltas the bus sends.

use arqonbus_proto::delta::{apply, checksum, encode, ApplyError};
use arqonbus_proto::v1::{ArqonMessage, DeltaInfo};
use prost::Message;

use crate::config::{Config, DeltaRule, Limits};
use crate::delta::OwnerStates;

/// The first byte picks what the rest is:
/// - 0: a base state and a delta from the wire, split where the second byte says;
/// - 1: two states the bus would encode a delta between;
/// - 2: a sequence of published envelopes (`u16` little-endian length, then an encoded
///   `ArqonMessage`) on a delta-only topic, run through the owner's resolve and stamp.
pub fn delta(data: &[u8]) {
    let [mode, cut, rest @ ..] = data else {
        return;
    };
    let (a, b) = rest.split_at(usize::from(*cut).min(rest.len()));
    match mode % 3 {
        0 => {
            // The limit comes from the input too, so "too large" is reached.
            let max = usize::from(*mode);
            if let Ok(out) = apply(a, b, max) {
                assert!(out.len() <= max, "apply made more than the limit allows");
            }
        }
        1 => round_trip(a, b),
        _ => owner(rest),
    }
}

/// What the bus encodes, every receiver can apply, and gets the target back.
fn round_trip(base: &[u8], target: &[u8]) {
    let d = encode(base, target);
    assert_eq!(apply(base, &d, target.len()).as_deref(), Ok(target));
    if !target.is_empty() {
        assert!(
            matches!(
                apply(base, &d, target.len() - 1),
                Err(ApplyError::TooLarge { .. })
            ),
            "a delta over the receiver's limit was applied"
        );
    }
}

fn owner(mut rest: &[u8]) {
    let config = Config {
        delta: vec![DeltaRule {
            realities: "*".into(),
            topics: ">".into(),
            keyframe_every: 4,
        }],
        limits: Limits {
            max_delta_state_bytes: 4096,
            ..Limits::default()
        },
        ..Config::default()
    };
    let mut states = OwnerStates::new(&config);
    let mut sequence = 0u64;
    // Per topic, the state a subscriber that took every pulse holds.
    let mut receiver: std::collections::HashMap<(String, String), (u64, Vec<u8>)> =
        Default::default();
    while let [lo, hi, tail @ ..] = rest {
        let len = usize::from(u16::from_le_bytes([*lo, *hi])).min(tail.len());
        let (one, tail) = tail.split_at(len);
        rest = tail;
        let Ok(mut message) = ArqonMessage::decode(one) else {
            continue;
        };
        if states.resolve(&mut message).is_err() {
            continue;
        }
        // A resolved pulse is whole: the bus never sequences a producer's delta.
        if let Some(DeltaInfo {
            keyframe: false, ..
        }) = message.delta
        {
            panic!("resolve left a producer's delta in place");
        }
        sequence += 1;
        message.sequence = sequence;
        let Some((base, sent, _tracked)) = states.stamp(&mut message) else {
            continue;
        };
        let value = message
            .payload
            .as_ref()
            .map(|p| p.value.to_vec())
            .unwrap_or_default();
        let info = message.delta.expect("stamp sets the delta info");
        assert_eq!(info.checksum, checksum(&value));
        let key = (message.reality_id.clone(), message.topic.clone());
        if let (Some(d), Some((held_seq, held))) = (sent, receiver.get(&key)) {
            // A receiver holding the base applies the delta and gets the whole state.
            assert_eq!(
                *held_seq, base,
                "the delta's base is not the topic's last pulse"
            );
            let got = apply(held, &d, value.len());
            assert_eq!(
                got.as_deref(),
                Ok(&value[..]),
                "the delta does not give the state"
            );
        }
        receiver.insert(key, (sequence, value));
    }
}
