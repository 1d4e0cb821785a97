//! Reconstruction of delta-only topics (docs/delta.md): per subscription (or history read) and
//! per topic, the last whole state. A pulse leaves here with its whole state as its payload, or
//! as an error; never as a state whose checksum did not match.

use std::collections::HashMap;

use arqonbus_proto::delta::{apply, checksum};
use arqonbus_proto::v1::ArqonMessage;

use crate::ClientError;

/// The last whole state of each delta-only topic one stream has seen.
#[derive(Debug, Default)]
pub(crate) struct Rebuild {
    states: HashMap<String, (u64, Vec<u8>)>,
    max_state_bytes: usize,
}

impl Rebuild {
    pub(crate) fn new(max_state_bytes: usize) -> Self {
        Self {
            states: HashMap::new(),
            max_state_bytes,
        }
    }

    /// Turns a delta into the whole state it stands for (in place) and checks every state's
    /// CRC-32. Pulses of other topics pass untouched.
    pub(crate) fn whole(&mut self, message: &mut ArqonMessage) -> Result<(), ClientError> {
        let Some(info) = message.delta.as_mut() else {
            return Ok(());
        };
        let payload = message.payload.get_or_insert_with(Default::default);
        let topic = &message.topic;
        if !info.keyframe {
            let Some((seq, base)) = self.states.get(topic) else {
                self.states.remove(topic);
                return Err(ClientError::Delta(format!(
                    "delta of `{topic}` at sequence {} is based on {}, and no state of the topic \
                     was received",
                    message.sequence, info.base_sequence
                )));
            };
            if *seq != info.base_sequence {
                let held = *seq;
                self.states.remove(topic);
                return Err(ClientError::Delta(format!(
                    "delta of `{topic}` at sequence {} is based on {}, but the state held is \
                     sequence {held}",
                    message.sequence, info.base_sequence
                )));
            }
            match apply(base, &payload.value, self.max_state_bytes) {
                Ok(whole) => payload.value = whole,
                Err(e) => {
                    self.states.remove(topic);
                    return Err(ClientError::Delta(format!(
                        "delta of `{topic}` at sequence {} does not apply: {e}",
                        message.sequence
                    )));
                }
            }
        }
        let sum = checksum(&payload.value);
        if sum != info.checksum {
            self.states.remove(topic);
            return Err(ClientError::Delta(format!(
                "state of `{topic}` at sequence {} has CRC-32 {sum:08x}, the bus sent {:08x}",
                message.sequence, info.checksum
            )));
        }
        // What the application sees is a whole state, marked as such.
        info.keyframe = true;
        self.states
            .insert(topic.clone(), (message.sequence, payload.value.clone()));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arqonbus_proto::delta::encode;
    use arqonbus_proto::v1::DeltaInfo;
    use prost_types::Any;

    fn pulse(sequence: u64, keyframe: bool, base: u64, sum: u32, value: Vec<u8>) -> ArqonMessage {
        ArqonMessage {
            topic: "sim.state.a".into(),
            sequence,
            payload: Some(Any {
                type_url: "t/s".into(),
                value,
            }),
            delta: Some(DeltaInfo {
                keyframe,
                base_sequence: base,
                checksum: sum,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn rebuilds_a_chain_and_refuses_what_it_cannot_prove() {
        let mut r = Rebuild::new(1 << 20);
        let s1 = b"state one".to_vec();
        let s2 = b"state two".to_vec();
        let mut k = pulse(1, true, 0, checksum(&s1), s1.clone());
        r.whole(&mut k).unwrap();
        let mut d = pulse(2, false, 1, checksum(&s2), encode(&s1, &s2));
        r.whole(&mut d).unwrap();
        assert_eq!(d.payload.unwrap().value, s2);

        // A delta on a base it does not hold.
        let mut wrong = pulse(4, false, 3, checksum(&s1), encode(&s2, &s1));
        assert!(matches!(r.whole(&mut wrong), Err(ClientError::Delta(m)) if m.contains("held")));
        // A corrupted state.
        let mut bad = pulse(5, true, 0, checksum(&s1) ^ 1, s1.clone());
        assert!(matches!(r.whole(&mut bad), Err(ClientError::Delta(m)) if m.contains("CRC")));
        // After an error the topic needs a keyframe again.
        let mut after = pulse(6, false, 5, checksum(&s2), encode(&s1, &s2));
        assert!(r.whole(&mut after).is_err());
        let mut plain = ArqonMessage::default();
        r.whole(&mut plain).unwrap();
    }
}
