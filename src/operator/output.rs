//! The envelope of a pulse an operator emitted, built the same way live and in replay so the two
//! encode to the same bytes.

use arqonbus_proto::operator::v1::Emit;
use arqonbus_proto::v1::ArqonMessage;
use xxhash_rust::xxh3::xxh3_64_with_seed;

/// The unstamped envelope of an output: everything but its sequence and id.
///
/// It inherits the input's reality, trace context and causal context (so a causal subscriber
/// sees it after everything the input depended on), takes the input's timestamp (an output is
/// computed at the instant of its input: no clock is read), and names its operator and input.
pub fn envelope(input: &ArqonMessage, operator: &str, emit: Emit) -> ArqonMessage {
    ArqonMessage {
        id: String::new(),
        sequence: 0,
        topic: emit.topic,
        producer_id: operator.to_owned(),
        reality_id: input.reality_id.clone(),
        trace_context: input.trace_context.clone(),
        spectral: emit.spectral,
        payload: emit.payload,
        timestamp_unix_nanos: input.timestamp_unix_nanos,
        causal: input.causal.clone(),
        reply_to: String::new(),
        emitted_by: operator.to_owned(),
        input_sequence: input.sequence,
        // An output's state is whole; the owner delta-encodes it if its topic is delta-only.
        delta: None,
        // The bus wrote it: no publisher's identity (`emitted_by` says which operator).
        tenant: String::new(),
        subject: String::new(),
    }
}

/// Stamps an output with its sequence: the causal entry of its own reality and a deterministic
/// UUIDv7 id. The timestamp stays the input's (the sequencer never moves time backwards, and the
/// input was the latest pulse of the reality).
pub fn stamp_output(message: &mut ArqonMessage, sequence: u64, timestamp_unix_nanos: u64) {
    message.sequence = sequence;
    message.timestamp_unix_nanos = timestamp_unix_nanos;
    message.id = output_id(&message.reality_id, sequence, timestamp_unix_nanos);
    message.causal.insert(message.reality_id.clone(), sequence);
}

/// A UUIDv7 whose time is the pulse's and whose "random" bits are a hash of (reality, sequence):
/// unique within the bus, and the same in every replay.
pub fn output_id(reality: &str, sequence: u64, timestamp_unix_nanos: u64) -> String {
    let a = xxh3_64_with_seed(reality.as_bytes(), sequence);
    let b = xxh3_64_with_seed(&sequence.to_le_bytes(), a);
    let mut random = [0u8; 10];
    random[..8].copy_from_slice(&a.to_le_bytes());
    random[8..].copy_from_slice(&b.to_le_bytes()[..2]);
    uuid::Builder::from_unix_timestamp_millis(timestamp_unix_nanos / 1_000_000, &random)
        .into_uuid()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_deterministic_v7_and_distinct() {
        let a = output_id("lab", 7, 1_700_000_000_000_000_000);
        assert_eq!(a, output_id("lab", 7, 1_700_000_000_000_000_000));
        assert_ne!(a, output_id("lab", 8, 1_700_000_000_000_000_000));
        assert_ne!(a, output_id("lab2", 7, 1_700_000_000_000_000_000));
        let id = uuid::Uuid::parse_str(&a).unwrap();
        assert_eq!(id.get_version_num(), 7);
    }

    #[test]
    fn stamped_output_encodes_the_same_every_time() {
        let mut input = ArqonMessage {
            reality_id: "lab".into(),
            sequence: 4,
            timestamp_unix_nanos: 99,
            ..Default::default()
        };
        for i in 0..20 {
            input.causal.insert(format!("r{i}"), i);
            input.trace_context.insert(format!("k{i}"), format!("v{i}"));
        }
        let emit = Emit {
            topic: "sim.out.step".into(),
            ..Default::default()
        };
        let encode = || {
            let mut m = envelope(&input, "op", emit.clone());
            stamp_output(&mut m, 5, 99);
            prost::Message::encode_to_vec(&m)
        };
        let first = encode();
        assert!((0..10).all(|_| encode() == first));
        let m: ArqonMessage = prost::Message::decode(&first[..]).unwrap();
        assert_eq!(m.causal["lab"], 5);
        assert_eq!(m.input_sequence, 4);
        assert_eq!(m.emitted_by, "op");
    }
}
